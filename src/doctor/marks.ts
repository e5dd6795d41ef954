// Who else uses packet-mark (fwmark) bits, pure: the known users, and the mark uses found in
// `iptables-save` text and `nft -j list ruleset` JSON. Our ip rule sends every packet whose bits
// under intercept.mask equal intercept.mark to the `local` route, so a bit someone else sets is
// a bit whose packets we would swallow, and a bit someone else clears or matches is one whose
// meaning we would change.

/** A rule that reads or writes packet-mark bits. */
export interface MarkUse {
  /** Where the rule lives, e.g. "iptables mangle PREROUTING" or "nft inet cilium pre". */
  readonly where: string;
  /** What the rule does with the mark, e.g. "sets 0x4000/0x4000". */
  readonly what: string;
  /** The mark bits it reads or writes (u32). */
  readonly bits: number;
  readonly kind: 'match' | 'set';
  /** It writes the whole 32-bit mark (a plain `--set-mark V`, `meta mark set V`, a full restore). */
  readonly whole: boolean;
}

export interface KnownMarkUser {
  readonly name: string;
  /** Bits it sets or matches by default. */
  readonly bits: number;
  /** Its marks, in words, for the report and the README. */
  readonly detail: string;
  /** Chain or nft table names that are its own. */
  readonly owns: RegExp;
}

/**
 * Defaults of the software that most often shares a host with us. Sources: kube-proxy
 * (--iptables-masquerade-bit 14, --iptables-drop-bit 15), Calico Felix (IptablesMarkMask
 * 0xffff0000), Cilium (pkg/datapath/linux/linux_defaults/mark.go and bpf/lib/common.h: identity
 * in 0xffff00ff, magic in 0x0f00, the IPsec key index in 0xf000), Istio (sidecar TPROXY mark 0x539
 * with route table 133; ambient's marks under 0xfff), Antrea (HostLocalSourceMark 0x1), the AWS
 * VPC CNI (AWS_VPC_K8S_CNI_CONNMARK 0x80), Weave Net (npc egress mark 0x40000), Tailscale
 * (0x40000, 0x80000 under 0xff0000), wg-quick (fwmark 51820), Docker's encrypted swarm overlay
 * (0xd0c4e3).
 */
export const KNOWN_MARK_USERS: readonly KnownMarkUser[] = [
  { name: 'kube-proxy', bits: 0xc000, detail: '0x4000 (masquerade) and 0x8000 (drop)', owns: /^KUBE-|^kube-proxy$/ },
  { name: 'Calico', bits: 0xffff0000, detail: 'the upper 16 bits (IptablesMarkMask 0xffff0000)', owns: /^cali-|^calico/ },
  { name: 'Cilium', bits: 0xffff0fff, detail: 'identity in 0xffff00ff, magic in 0x0f00 (with IPsec, the key index in 0xf000 too)', owns: /^CILIUM_|^cilium/i },
  { name: 'Istio', bits: 0xfff, detail: 'sidecar TPROXY 0x539 (route table 133), ambient marks under 0xfff', owns: /^ISTIO_|^istio|^ztunnel-/ },
  { name: 'Antrea', bits: 0x1, detail: '0x1 (host-local source)', owns: /^ANTREA-|^antrea/ },
  { name: 'AWS VPC CNI', bits: 0x80, detail: 'connmark 0x80', owns: /^AWS-|^AWS_/ },
  { name: 'Weave Net', bits: 0x40000, detail: '0x40000 (egress)', owns: /^WEAVE-/ },
  { name: 'Tailscale', bits: 0xff0000, detail: '0x40000 and 0x80000 under 0xff0000', owns: /^ts-|^tailscale/ },
  { name: 'wg-quick', bits: 0xca6c, detail: 'fwmark 51820 (0xca6c) on its tunnel socket', owns: /^wg-quick/ },
  { name: 'Docker (encrypted overlay)', bits: 0xd0c4e3, detail: '0xd0c4e3 on encrypted VXLAN packets', owns: /^DOCKER/ },
];

export const hex = (n: number): string => `0x${(n >>> 0).toString(16)}`;

/** The known user whose chain or table this is, if any. */
export function ownerOf(where: string): string | null {
  const names = where.split(' ');
  for (const user of KNOWN_MARK_USERS) if (names.some((n) => user.owns.test(n))) return user.name;
  return null;
}

/** Known users whose default bits overlap `mask`. */
export function knownUsersOverlapping(mask: number): KnownMarkUser[] {
  return KNOWN_MARK_USERS.filter((u) => (u.bits & mask) >>> 0 !== 0);
}

/** Parses "0x4000/0x4000", "0x539" or "1337" as value and mask (mask 0xffffffff when absent). */
export function parseValueMask(text: string): { value: number; mask: number } | null {
  const m = /^(0x[0-9a-f]+|\d+)(?:\/(0x[0-9a-f]+|\d+))?$/i.exec(text);
  if (m === null) return null;
  const value = Number(m[1]);
  const mask = m[2] === undefined ? 0xffffffff : Number(m[2]);
  if (!Number.isSafeInteger(value) || !Number.isSafeInteger(mask) || value > 0xffffffff || mask > 0xffffffff) return null;
  return { value: value >>> 0, mask: mask >>> 0 };
}

/** Splits an iptables-save rule line into words; double-quoted words (comments) stay whole. */
function words(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m !== null; m = re.exec(line)) out.push(m[1] ?? m[2]!);
  return out;
}

/** `V/M` as used bits: the mask, or the value's own bits when the whole mark is compared or set. */
function usedBits(vm: { value: number; mask: number }): number {
  return vm.mask === 0xffffffff ? vm.value : vm.mask;
}

/**
 * Mark uses in `iptables-save` output (either backend): `-m mark --mark`, the MARK target
 * (`--set-xmark`, `--set-mark`, `--or-mark`, `--and-mark`, `--xor-mark`), CONNMARK's
 * `--restore-mark`/`--save-mark` (their `--nfmask` is the packet side) and TPROXY's
 * `--tproxy-mark`. `-m connmark --mark` and CONNMARK `--set-mark` touch the conntrack mark only.
 */
export function parseIptablesSave(text: string, tool: string): MarkUse[] {
  const uses: MarkUse[] = [];
  let table = '?';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      table = line.slice(1);
      continue;
    }
    if (!line.startsWith('-A ')) continue;
    const w = words(line);
    const where = `${tool} ${table} ${w[1] ?? '?'}`;
    let module = '';
    const add = (what: string, bits: number, kind: MarkUse['kind'], whole: boolean): void => {
      if (bits !== 0 || whole) uses.push({ where, what, bits: bits >>> 0, kind, whole });
    };
    for (let i = 2; i < w.length; i++) {
      const word = w[i]!;
      if (word === '-m' || word === '--match' || word === '-j' || word === '--jump') {
        module = w[i + 1] ?? '';
        i++;
        continue;
      }
      const arg = w[i + 1] ?? '';
      const vm = parseValueMask(arg);
      if (module === 'mark' && word === '--mark' && vm) add(`matches mark ${arg}`, usedBits(vm), 'match', false);
      else if (module === 'MARK' && vm && (word === '--set-xmark' || word === '--set-mark')) {
        // --set-xmark V/M clears M, then XORs V: it writes M | V (kube-proxy clears with 0x4000/0x0).
        add(`sets ${arg}`, vm.mask === 0xffffffff ? vm.value : vm.mask | vm.value, 'set', vm.mask === 0xffffffff);
      } else if (module === 'MARK' && vm && (word === '--or-mark' || word === '--xor-mark')) add(`${word.slice(2, 5)}s ${arg}`, vm.value, 'set', false);
      else if (module === 'MARK' && vm && word === '--and-mark') add(`ands ${arg}`, ~vm.value, 'set', false);
      else if (module === 'TPROXY' && word === '--tproxy-mark' && vm) add(`TPROXY sets ${arg}`, usedBits(vm), 'set', vm.mask === 0xffffffff);
      else if (module === 'CONNMARK' && (word === '--restore-mark' || word === '--save-mark')) {
        const at = w.indexOf('--nfmask', i);
        const nfmask = at === -1 ? null : parseValueMask(w[at + 1] ?? '');
        const bits = nfmask === null ? 0xffffffff : nfmask.value;
        const restore = word === '--restore-mark';
        const what = `${restore ? 'restores' : 'saves'} the mark${nfmask ? ` under ${hex(bits)}` : ''}`;
        // A full restore writes whatever the connection carries: which bits is unknown.
        if (restore && bits === 0xffffffff) add(what, 0, 'set', true);
        else add(what, bits, restore ? 'set' : 'match', false);
      }
    }
  }
  return uses;
}

type Json = unknown;

function isObj(v: Json): v is Record<string, Json> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isMeta(v: Json, key: string): boolean {
  return isObj(v) && isObj(v['meta']) && v['meta']['key'] === key;
}

function isCt(v: Json, key: string): boolean {
  return isObj(v) && isObj(v['ct']) && v['ct']['key'] === key;
}

/** Every number in an nft JSON value (a set, a range, a prefix...), OR-ed. */
function numbersOf(v: Json): number {
  if (typeof v === 'number') return v >>> 0;
  if (Array.isArray(v)) return v.reduce<number>((acc, x) => (acc | numbersOf(x)) >>> 0, 0);
  if (isObj(v)) return Object.values(v).reduce<number>((acc, x) => (acc | numbersOf(x)) >>> 0, 0);
  return 0;
}

/**
 * Bits a `meta mark set <value>` writes. `mark | C` and `mark ^ C` write C, `mark & C` clears
 * ~C; a constant or a value from elsewhere (ct mark, a map) replaces the whole mark.
 */
function writtenBits(v: Json): { bits: number; whole: boolean } {
  if (typeof v === 'number') return { bits: v >>> 0, whole: true };
  if (isMeta(v, 'mark')) return { bits: 0, whole: false };
  if (isObj(v)) {
    for (const op of ['|', '^', '&'] as const) {
      const args = v[op];
      if (!Array.isArray(args) || args.length !== 2) continue;
      const [a, b] = args;
      const inner = writtenBits(a);
      if (typeof b !== 'number') return { bits: 0, whole: true };
      const own = op === '&' ? ~b >>> 0 : b >>> 0;
      return { bits: (inner.bits | own) >>> 0, whole: inner.whole };
    }
  }
  return { bits: 0, whole: true };
}

function describeWrite(w: { bits: number; whole: boolean }): string {
  if (w.whole && w.bits === 0) return 'replaces the whole mark';
  return w.whole ? `sets the mark to ${hex(w.bits)}` : `sets bits ${hex(w.bits)}`;
}

/**
 * Mark uses in `nft -j list ruleset` output: `meta mark` compared (under a mask or whole) and
 * `meta mark set`. iptables-nft's `xt` targets are opaque in JSON: their marks come from
 * `iptables-save`, so the tables it dumped are skipped here (`skipTables`, "family name").
 */
export function parseNftRuleset(doc: Json, skipTables: ReadonlySet<string>): MarkUse[] {
  const uses: MarkUse[] = [];
  const list = isObj(doc) && Array.isArray(doc['nftables']) ? doc['nftables'] : [];
  for (const entry of list) {
    if (!isObj(entry) || !isObj(entry['rule'])) continue;
    const rule = entry['rule'];
    const table = `${String(rule['family'])} ${String(rule['table'])}`;
    if (skipTables.has(table)) continue;
    const where = `nft ${table} ${String(rule['chain'])}`;
    const exprs = Array.isArray(rule['expr']) ? rule['expr'] : [];
    for (const e of exprs) {
      if (!isObj(e)) continue;
      const match = e['match'];
      if (isObj(match)) {
        const left = match['left'];
        if (isMeta(left, 'mark')) {
          const bits = numbersOf(match['right']);
          if (bits !== 0) uses.push({ where, what: `matches mark ${hex(bits)}`, bits, kind: 'match', whole: false });
        } else if (isObj(left) && Array.isArray(left['&']) && isMeta(left['&'][0], 'mark') && typeof left['&'][1] === 'number') {
          const bits = left['&'][1] >>> 0;
          uses.push({ where, what: `matches mark under ${hex(bits)}`, bits, kind: 'match', whole: false });
        }
        continue;
      }
      const mangle = e['mangle'];
      if (isObj(mangle) && isMeta(mangle['key'], 'mark')) {
        const w = isCt(mangle['value'], 'mark') ? { bits: 0, whole: true } : writtenBits(mangle['value']);
        if (w.bits !== 0 || w.whole) uses.push({ where, what: describeWrite(w), bits: w.bits, kind: 'set', whole: w.whole });
      }
    }
  }
  return uses;
}

/** The tables an iptables-save dump lists ("*mangle" → "ip mangle"), for `parseNftRuleset`'s skip list. */
export function iptablesTables(text: string, family: 'ip' | 'ip6'): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('*'))
    .map((l) => `${family} ${l.slice(1).trim()}`);
}

/**
 * A single free bit to suggest for intercept.mark/mask: first ones no known user takes by
 * default (0x2000, then 0x1000: kube-proxy's nibble, unused by kube-proxy itself), then any bit
 * nobody on this host uses. null when all 32 are taken.
 */
export function suggestMarkBit(usedHere: number): number | null {
  const knownBits = KNOWN_MARK_USERS.reduce((acc, u) => (acc | u.bits) >>> 0, 0);
  const candidates = [0x2000, 0x1000];
  for (let b = 31; b >= 0; b--) candidates.push((1 << b) >>> 0);
  const free = (bit: number, taken: number): boolean => (bit & taken) >>> 0 === 0;
  return candidates.find((b) => free(b, usedHere | knownBits)) ?? candidates.find((b) => free(b, usedHere)) ?? null;
}
