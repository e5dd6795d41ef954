// The systemd unit agrees with the daemon's defaults and asks for nothing beyond what it needs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { parseUnit, UNIT_FILE } from './unit-file.js';

describe('packaging/tproxy-interceptor.service', () => {
  const unit = parseUnit(readFileSync(UNIT_FILE, 'utf8'));
  const get = (key: string): string => {
    const v = unit.get(key);
    expect(v, key).toBeDefined();
    return v![v!.length - 1]!;
  };

  it('runs `run --config` as a dedicated user with CAP_NET_ADMIN and CAP_NET_RAW only, no new privileges', () => {
    expect(get('Service.ExecStart')).toMatch(/^\/usr\/bin\/tproxy-interceptor run --config \/etc\/tproxy-interceptor\/config\.toml$/);
    expect(get('Service.User')).toBe('tproxy-interceptor');
    expect(get('Service.AmbientCapabilities').split(' ').sort()).toEqual(['CAP_NET_ADMIN', 'CAP_NET_RAW']);
    expect(get('Service.CapabilityBoundingSet')).toBe(get('Service.AmbientCapabilities'));
    expect(get('Service.NoNewPrivileges')).toBe('yes');
  });

  it('reloads with `reload` (its exit status tells systemctl whether the config was applied)', () => {
    expect(get('Service.ExecReload')).toBe(get('Service.ExecStart').replace(' run ', ' reload '));
  });

  it('gives the service user the default registry and admin socket directories', () => {
    expect(`/var/lib/${get('Service.StateDirectory')}`).toBe(DEFAULT_CONFIG.registry.path);
    expect(`/run/${get('Service.RuntimeDirectory')}`).toBe(path.dirname(DEFAULT_CONFIG.registry.adminSocket));
  });

  it('stops with SIGTERM (the daemon removes its rules), with time to drain, and no ExecStop', () => {
    expect(get('Service.KillSignal')).toBe('SIGTERM');
    expect(unit.has('Service.ExecStop')).toBe(false);
    expect(Number(get('Service.TimeoutStopSec'))).toBeGreaterThan(10 + 5); // --drain default 10s, then removal
  });

  it('sizes LimitNOFILE for the connection target: 1048576, the kernel\'s default fs.nr_open', () => {
    expect(Number(get('Service.LimitNOFILE'))).toBe(1048576);
  });
});
