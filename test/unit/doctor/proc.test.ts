import { describe, expect, it } from 'vitest';
import { CAP_NET_ADMIN, CAP_NET_RAW, hasCap, parseCapEff, parsePortRange, parseProcNetTcp, parseReservedPorts } from '../../../src/doctor/proc.js';

describe('parseCapEff', () => {
  it('reads the effective set', () => {
    const caps = parseCapEff('Name:\tnode\nCapInh:\t0000000000003000\nCapEff:\t0000000000003000\n')!;
    expect(hasCap(caps, CAP_NET_ADMIN)).toBe(true);
    expect(hasCap(caps, CAP_NET_RAW)).toBe(true);
    expect(hasCap(parseCapEff('CapEff:\t0000000000001000\n')!, CAP_NET_RAW)).toBe(false);
    expect(hasCap(parseCapEff('CapEff:\t000001ffffffffff\n')!, CAP_NET_ADMIN)).toBe(true);
    expect(parseCapEff('Name:\tnode\n')).toBeNull();
  });
});

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

describe('parseProcNetTcp', () => {
  it('keeps LISTEN sockets and decodes little-endian IPv4 words', () => {
    const text = `${HEADER}   0: 0100007F:5FBF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:5FBF 0100007F:A2C6 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0
`;
    expect(parseProcNetTcp(text, 4, true)).toEqual([
      { family: 4, address: '127.0.0.1', port: 24511, inode: 4242 },
      { family: 4, address: '0.0.0.0', port: 22, inode: 17 },
    ]);
    expect(parseProcNetTcp(text, 4, false)[0]!.address).toBe('1.0.0.127');
  });

  it('decodes IPv6 addresses word by word and shortens them like config text', () => {
    const text = `${HEADER}   0: 00000000000000000000000001000000:5FBF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:5FBF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 98 1 0000000000000000 100 0 0 10 0
   2: 000000FD000000000000000002000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 97 1 0000000000000000 100 0 0 10 0
`;
    expect(parseProcNetTcp(text, 6, true).map((s) => s.address)).toEqual(['::1', '::', 'fd00::2']);
  });
});

describe('port ranges', () => {
  it('reads ip_local_port_range and ip_local_reserved_ports', () => {
    expect(parsePortRange('32768\t60999\n')).toEqual({ from: 32768, to: 60999 });
    expect(parsePortRange('nonsense')).toBeNull();
    expect(parseReservedPorts('\n')).toEqual([]);
    expect(parseReservedPorts('8080,24511,30000-30010\n')).toEqual([
      { from: 8080, to: 8080 },
      { from: 24511, to: 24511 },
      { from: 30000, to: 30010 },
    ]);
  });
});
