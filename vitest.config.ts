import { defineConfig } from 'vitest/config';

// forks, not threads: the addon and network namespaces are per process.
export default defineConfig({
  test: {
    pool: 'forks',
    projects: [
      // Pure logic: any user, no addon.
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      // The real addon on loopback (root: IP_TRANSPARENT listeners).
      { extends: true, test: { name: 'native', include: ['test/native/**/*.test.ts'], testTimeout: 30_000 } },
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
