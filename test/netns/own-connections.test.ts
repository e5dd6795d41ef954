// The interceptor's own upstream connections are never taken for client traffic. A pp=true
// upstream leaves from this host's own address with a port the kernel picks; where a target
// network holds that address (the lab's 198.18.2.0/24 holds the gateway's 198.18.2.1) and the
// port is an intercepted one, the backend's SYN-ACK would match the tproxy rule and be handed to
// our listener instead of the waiting socket: the connect then times out. Here every port the
// kernel may pick is an intercepted one (ip_local_port_range = 9000-9010, targets 9000-9010).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG } from './helpers/lab.js';

describe.each(['nftables', 'iptables'])('own connections with backend = %s', (backend) => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await Lab.create();
    await lab.startBackend([8080]);
    await lab.exec(lab.ns.gateway, ['sysctl', '-qw', 'net.ipv4.ip_local_port_range=9000 9010']);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('a pp=true upstream whose source port is an intercepted port on an intercepted address of ours still connects', async () => {
    const config = await lab.writeConfig(BASE_CONFIG.replace('[intercept]', `[intercept]\nbackend = "${backend}"`));
    const daemon = await lab.startDaemon(config);
    const add = await lab.cli(['instances', 'add', 'inst-1', '--app', 'app', '--ip', ADDR.backend, '--policy', '8080:pp', '--config', config]);
    expect(add.code).toBe(0);
    for (let i = 0; i < 3; i++) {
      const r = await lab.client(ADDR.backend, 8080, { timeoutMs: 5000 });
      expect(r.error).toBeNull();
      // The backend saw our own address, from a port in the intercepted range.
      expect((r.saw as { remote: string }).remote).toMatch(new RegExp(`^${ADDR.gatewayBackendSide.replace(/\./g, '\\.')}:90(0\\d|10)$`));
    }
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });
});
