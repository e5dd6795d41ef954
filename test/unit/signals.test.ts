import { describe, expect, it } from 'vitest';
import { inspectorFlags } from '../../src/signals.js';

describe('inspectorFlags', () => {
  it('finds inspector flags in node\'s own flags and in NODE_OPTIONS', () => {
    expect(inspectorFlags(['--inspect'], undefined)).toBe('--inspect');
    expect(inspectorFlags(['--enable-source-maps'], '--max-old-space-size=512 --inspect-brk=0.0.0.0:9229')).toBe('--inspect-brk=0.0.0.0:9229');
    expect(inspectorFlags([], '--inspect-wait')).toBe('--inspect-wait');
  });

  it('leaves other flags alone', () => {
    expect(inspectorFlags(['--enable-source-maps', '--inspect-port=0'], '--max-old-space-size=512')).toBeNull();
    expect(inspectorFlags([], undefined)).toBeNull();
  });
});
