import { defineConfig } from 'vitest/config';

// forks, not threads: the addon and network namespaces are per process.
export default defineConfig({
  test: {
    pool: 'forks',
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'netns',
          include: ['test/netns/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          poolOptions: { forks: { maxForks: 2 } },
        },
      },
    ],
  },
});
