// Parsers for the /proc files doctor reads, pure: capabilities, listening TCP sockets, port
// ranges. The gatherer reads the files; these turn their text into facts.

export const CAP_NET_ADMIN = 12;
export const CAP_NET_RAW = 13;

/** CapEff from /proc/<pid>/status as a bit set, or null when absent. */
export function parseCapEff(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-f]+)\s*$/im.exec(status);
  return m === null ? null : BigInt(`0x${m[1]}`);
}

export function hasCap(capEff: bigint, cap: number): boolean {
  return (capEff >> BigInt(cap)) & 1n ? true : false;
}

export interface ListeningSocket {
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;
  /** Socket inode, to find the owning process through /proc/<pid>/fd. */
  readonly inode: number;
}

const TCP_LISTEN = '0A';

/**
 * /proc/net/tcp prints each 32-bit address word as the hex of its in-memory bytes read in host
 * order (so 127.0.0.1 is "0100007F" on little-endian machines); the port is plain hex.
 */
function wordBytes(hexWord: string, littleEndian: boolean): number[] {
  const v = parseInt(hexWord, 16) >>> 0;
  const be = [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
  return littleEndian ? be.reverse() : be;
}

function formatV6(bytes: number[]): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // Collapse the longest run of zero groups (RFC 5952), enough for comparing with config text.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  if (best === -1) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** LISTEN sockets in /proc/net/tcp (family 4) or /proc/net/tcp6 (family 6). */
export function parseProcNetTcp(text: string, family: 4 | 6, littleEndian: boolean): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== TCP_LISTEN) continue;
    const [addrHex, portHex] = f[1]!.split(':');
    if (addrHex === undefined || portHex === undefined) continue;
    const bytes: number[] = [];
    for (let i = 0; i < addrHex.length; i += 8) bytes.push(...wordBytes(addrHex.slice(i, i + 8), littleEndian));
    const address = family === 4 ? bytes.join('.') : formatV6(bytes);
    out.push({ family, address, port: parseInt(portHex, 16), inode: Number(f[9]) });
  }
  return out;
}

/** net.ipv4.ip_local_port_range: "32768\t60999". */
export function parsePortRange(text: string): { from: number; to: number } | null {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  return m === null ? null : { from: Number(m[1]), to: Number(m[2]) };
}

/** net.ipv4.ip_local_reserved_ports: "" or "8080,24511,30000-30010". */
export function parseReservedPorts(text: string): Array<{ from: number; to: number }> {
  return text
    .trim()
    .split(',')
    .filter((s) => s !== '')
    .map((s) => {
      const [a, b] = s.split('-');
      return { from: Number(a), to: Number(b ?? a) };
    });
}
