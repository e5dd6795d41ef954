// Signals an operator sends must do no harm: SIGUSR1 never opens Node's inspector (a root shell
// for any local user), SIGHUP reloads the config (reload.test.ts covers what a reload changes)
// without ending the daemon or dropping its rules, SIGTERM still stops it cleanly. Each signal
// goes to a real daemon in the lab's gateway namespace.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, BASE_CONFIG, CLI, sawAddress, type Proc } from './helpers/lab.js';

describe('signals', () => {
  let lab: Lab;
  let config: string;

  /** Is anything listening on the inspector's port in the gateway namespace? */
  const inspectorOpen = async (): Promise<boolean> => (await lab.exec(lab.ns.gateway, ['ss', '-Htln', 'sport = :9229'])).stdout.trim() !== '';
  const stop = async (daemon: Proc): Promise<number | null> => {
    daemon.child.kill('SIGTERM');
    return (await daemon.exited).code;
  };
  /** A connection through the interceptor reaches the backend with the client's address. */
  const intercepts = async (): Promise<void> => {
    const r = await lab.client(ADDR.backend, 8081);
    expect(r.error).toBeNull();
    expect(sawAddress(r)).toBe(ADDR.client);
  };

  beforeAll(async () => {
    lab = await Lab.create();
    config = await lab.writeConfig(BASE_CONFIG);
    await lab.startBackend([8080, 8081]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('the probe works: a plain node process does open the inspector on SIGUSR1', async () => {
    const plain = lab.spawn(lab.ns.gateway, ['node', '-e', "setInterval(() => {}, 1000); console.log('up')"]);
    await plain.waitFor('up');
    plain.child.kill('SIGUSR1');
    await plain.waitFor('Debugger listening');
    expect(await inspectorOpen()).toBe(true);
    plain.child.kill('SIGKILL');
    await plain.exited;
    expect(await inspectorOpen()).toBe(false);
  });

  it('SIGUSR1 is logged and opens nothing; SIGHUP reloads and keeps the daemon and its rules; SIGTERM stops cleanly', async () => {
    const daemon = await lab.startDaemon(config);
    daemon.child.kill('SIGUSR1');
    await daemon.waitFor('SIGUSR1: nothing to reopen (logs go to stdout)');
    // The inspector would have been up within milliseconds; give it far longer.
    await new Promise((r) => setTimeout(r, 500));
    expect(await inspectorOpen()).toBe(false);
    expect(daemon.child.exitCode).toBeNull();
    await intercepts();

    daemon.child.kill('SIGHUP');
    await daemon.waitFor('"msg":"SIGHUP: reloading the config"');
    await daemon.waitFor('"msg":"config reloaded: nothing changed"');
    await new Promise((r) => setTimeout(r, 300));
    expect(daemon.child.exitCode).toBeNull();
    expect(daemon.child.signalCode).toBeNull();
    expect(await lab.nftTables()).toContain('inet tproxy_interceptor');
    expect(await lab.ipRules(4)).toMatch(/fwmark 0x2000\/0x2000 lookup 4511/);
    await intercepts();
    expect(await inspectorOpen()).toBe(false);

    expect(await stop(daemon)).toBe(0);
    expect(daemon.output()).toMatch(/"msg":"stopped; rules removed"/);
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
    expect(await lab.ipRules(4)).not.toMatch(/lookup 4511/);
  });

  it('run refuses to start with the inspector enabled (NODE_OPTIONS=--inspect) and installs nothing', async () => {
    const r = await lab.exec(lab.ns.gateway, ['env', 'NODE_OPTIONS=--inspect=127.0.0.1:9229', 'node', CLI, 'run', '--config', config], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refusing to start with --inspect=127\.0\.0\.1:9229/);
    expect(await lab.nftTables()).not.toContain('inet tproxy_interceptor');
    expect(await inspectorOpen()).toBe(false);
  });
});
