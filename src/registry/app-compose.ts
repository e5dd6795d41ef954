// app-compose.json checked as dstack parses it upstream: serde's derived Deserialize for
// dstack-types' `AppCompose` (dstack-types/src/lib.rs) over serde_json. Any error there makes the
// gateway's fetch fail permanently (gateway/src/proxy/port_policy.rs, fetch_port_policy), so any
// error here does too: the whole document fails, never one entry. Driven by the streaming
// tokenizer (json-stream.ts); only `port_policy` is kept, every other field is only checked.
//
// Field types, as declared upstream (absent fields take their default; `null` is only accepted
// where the field is an Option):
//   manifest_version u32 (required), name String (required), runner String (required),
//   features Vec<String>, docker_compose_file Option<String>, public_logs / public_sysinfo /
//   public_tcbinfo / kms_enabled / local_key_provider_enabled / no_instance_id / secure_time bool,
//   gateway_enabled / tproxy_enabled bool (a flattened struct), key_provider
//   Option<"none"|"kms"|"local"|"tpm">, key_provider_id hex bytes, allowed_envs Vec<String>,
//   storage_fs Option<String>, swap_size u64 or a size string ("2G", "0x1000"),
//   port_policy { ports: Vec<{ port: u16 (required), pp: bool }>, restrict_mode: bool }.
// Unknown keys are ignored; a known key given twice is an error (serde's "duplicate field").
import type { JsonVisitor } from './json-stream.js';
import { makePolicy } from './policy.js';
import type { PortPolicy } from './types.js';

/** A schema error: `field` is the dotted path of the offending value (`port_policy.ports[2].pp`). */
export class ComposeSchemaError extends Error {
  readonly field: string;
  constructor(field: string, problem: string) {
    super(field === '' ? problem : `${field}: ${problem}`);
    this.field = field;
  }
}

type Type =
  | { readonly t: 'bool' }
  | { readonly t: 'uint'; readonly name: string; readonly max: bigint }
  | { readonly t: 'string' }
  | { readonly t: 'hex' }
  | { readonly t: 'size' }
  | { readonly t: 'enum'; readonly name: string; readonly variants: readonly string[] }
  | { readonly t: 'option'; readonly of: Type }
  | { readonly t: 'vec'; readonly of: Type }
  | { readonly t: 'struct'; readonly name: string; readonly fields: Readonly<Record<string, Type>>; readonly required: readonly string[] }
  | { readonly t: 'any' };

const BOOL: Type = { t: 'bool' };
const STRING: Type = { t: 'string' };
const ANY: Type = { t: 'any' };
const U16: Type = { t: 'uint', name: 'u16', max: 65535n };
const U32: Type = { t: 'uint', name: 'u32', max: 4294967295n };

const PORT_ATTRS: Type = { t: 'struct', name: 'PortAttrs', fields: { port: U16, pp: BOOL }, required: ['port'] };
const PORT_POLICY: Type = {
  t: 'struct',
  name: 'PortPolicy',
  fields: { ports: { t: 'vec', of: PORT_ATTRS }, restrict_mode: BOOL },
  required: [],
};
const APP_COMPOSE: Type = {
  t: 'struct',
  name: 'AppCompose',
  fields: {
    manifest_version: U32,
    name: STRING,
    features: { t: 'vec', of: STRING },
    runner: STRING,
    docker_compose_file: { t: 'option', of: STRING },
    public_logs: BOOL,
    public_sysinfo: BOOL,
    public_tcbinfo: BOOL,
    kms_enabled: BOOL,
    gateway_enabled: BOOL,
    tproxy_enabled: BOOL,
    local_key_provider_enabled: BOOL,
    key_provider: { t: 'option', of: { t: 'enum', name: 'KeyProviderKind', variants: ['none', 'kms', 'local', 'tpm'] } },
    key_provider_id: { t: 'hex' },
    allowed_envs: { t: 'vec', of: STRING },
    no_instance_id: BOOL,
    secure_time: BOOL,
    storage_fs: { t: 'option', of: STRING },
    swap_size: { t: 'size' },
    port_policy: PORT_POLICY,
  },
  required: ['manifest_version', 'name', 'runner'],
};

/** Strings longer than this are not kept where their text matters (enum, size): none is valid. */
const MAX_KEPT_STRING = 4096;

type Value = boolean | bigint | string | null | undefined | Value[] | { [key: string]: Value };

type Deliver = (value: Value) => void;

interface StructFrame {
  readonly kind: 'struct';
  readonly type: Extract<Type, { t: 'struct' }>;
  readonly path: string;
  readonly deliver: Deliver;
  readonly values: { [key: string]: Value };
  /** The field whose value is due next (undefined: an unknown key, skipped). */
  field: string | undefined;
}

interface VecFrame {
  readonly kind: 'vec';
  readonly of: Type;
  readonly path: string;
  readonly deliver: Deliver;
  /** Kept only for elements that are structs (the port list); others are only counted. */
  readonly values: Value[] | null;
  count: number;
}

interface StringFrame {
  readonly kind: 'string';
  readonly type: Type;
  readonly path: string;
  readonly deliver: Deliver;
  text: string;
  length: number;
  hexOk: boolean;
}

/** `{"kms": null}`: serde_json's map form of a unit enum variant. */
interface EnumMapFrame {
  readonly kind: 'enum-map';
  readonly type: Extract<Type, { t: 'enum' }>;
  readonly path: string;
  readonly deliver: Deliver;
  variant: string | null;
  awaitingValue: boolean;
}

interface SkipFrame {
  readonly kind: 'skip';
  depth: number;
}

type Frame = StructFrame | VecFrame | StringFrame | EnumMapFrame | SkipFrame;

function describeType(type: Type): string {
  switch (type.t) {
    case 'bool':
      return 'a boolean';
    case 'uint':
      return type.name;
    case 'string':
      return 'a string';
    case 'hex':
      return 'a hex string';
    case 'size':
      return 'a memory size string or number';
    case 'enum':
      return `enum ${type.name}`;
    case 'option':
      return describeType(type.of);
    case 'vec':
      return 'a sequence';
    case 'struct':
      return `struct ${type.name}`;
    case 'any':
      return 'any value';
  }
}

const isHexDigit = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);

// Rust's char::is_whitespace (str::trim), which is not JavaScript's \s.
const RUST_WS = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
const U64_MAX = 18446744073709551615n;

/** Rust's u64::from_str / from_str_radix: an optional '+', then at least one digit. */
function parseRustU64(text: string, radix: 10 | 16): bigint | null {
  const digits = text.startsWith('+') ? text.slice(1) : text;
  if (!(radix === 10 ? /^[0-9]+$/ : /^[0-9a-fA-F]+$/).test(digits)) return null;
  const v = BigInt(radix === 10 ? digits : `0x${digits}`);
  return v <= U64_MAX ? v : null;
}

/** size-parser's MemorySize::parse (dstack size-parser/src/lib.rs): bytes, or the reason it fails. */
export function parseMemorySize(input: string): bigint | string {
  const s = input.replace(RUST_WS, '');
  if (s === '') return 'empty memory size';
  if (s.startsWith('0x') || s.startsWith('0X')) return parseRustU64(s.slice(2), 16) ?? `invalid hexadecimal value ${JSON.stringify(s.slice(2))}`;
  if (/^[0-9]+$/.test(s)) return parseRustU64(s, 10) ?? `invalid numeric value ${JSON.stringify(s)}`;
  const last = [...s].pop() as string;
  const shift = { k: 10n, m: 20n, g: 30n, t: 40n }[last.toLowerCase()];
  if (shift === undefined) return `unknown memory size suffix ${JSON.stringify(last)}`;
  const n = parseRustU64(s.slice(0, -1), 10);
  if (n === null) return `invalid numeric value ${JSON.stringify(s.slice(0, -1))}`;
  const bytes = n << shift;
  return bytes <= U64_MAX ? bytes : 'overflow in memory size calculation';
}

/** What an integer lexeme is to serde: an unsigned integer, a negative one, or a float. */
function classifyNumber(lexeme: string): 'unsigned' | 'negative' | 'float' {
  // serde_json reads "-0" as the float -0.0, and any fraction or exponent as a float.
  if (/[.eE]/.test(lexeme) || lexeme === '-0') return 'float';
  return lexeme.startsWith('-') ? 'negative' : 'unsigned';
}

/**
 * A JsonVisitor that checks one app-compose.json document against AppCompose. Throws
 * ComposeSchemaError at the first error; after the tokenizer's end(), `policy()` is the
 * document's port policy (an open policy with no headers when `port_policy` is absent).
 */
export class AppComposeReader implements JsonVisitor {
  readonly #stack: Frame[] = [];
  #root: { [key: string]: Value } | undefined;
  #rootDone = false;

  policy(): PortPolicy {
    if (!this.#rootDone || this.#root === undefined) throw new ComposeSchemaError('', 'incomplete document');
    const pp = this.#root['port_policy'] as { ports?: { port: bigint; pp?: boolean }[]; restrict_mode?: boolean } | undefined;
    const ports = new Map<number, boolean>();
    // Later entries for the same port win, as the gateway collects them into a map. Port 0 is a
    // valid u16 upstream but no connection has it: it changes nothing, so it is not kept.
    for (const entry of pp?.ports ?? []) {
      const port = Number(entry.port);
      if (port !== 0) ports.set(port, entry.pp === true);
    }
    return makePolicy(ports, pp?.restrict_mode === true);
  }

  // ------------------------------------------------------------------------------------------
  // Events.

  startObject(): void {
    const top = this.#top();
    if (top?.kind === 'skip') {
      top.depth++;
      return;
    }
    const { type, path, deliver } = this.#expect();
    const t = type.t === 'option' ? type.of : type;
    if (t.t === 'any') this.#stack.push({ kind: 'skip', depth: 1 });
    else if (t.t === 'struct') this.#stack.push({ kind: 'struct', type: t, path, deliver, values: {}, field: undefined });
    else if (t.t === 'enum') this.#stack.push({ kind: 'enum-map', type: t, path, deliver, variant: null, awaitingValue: false });
    else this.#invalidType(path, 'map', type);
  }

  key(name: string | null): void {
    const top = this.#top();
    if (top === undefined || top.kind === 'skip') return;
    if (top.kind === 'enum-map') {
      if (top.variant !== null) throw new ComposeSchemaError(top.path, `invalid type: map with more than one key, expected ${describeType(top.type)}`);
      if (name === null || !top.type.variants.includes(name)) {
        throw new ComposeSchemaError(top.path, `unknown variant ${JSON.stringify(name ?? '…')}, expected one of ${top.type.variants.map((v) => `\`${v}\``).join(', ')}`);
      }
      top.variant = name;
      top.awaitingValue = true;
      return;
    }
    if (top.kind !== 'struct') return;
    if (name !== null && Object.hasOwn(top.type.fields, name)) {
      if (Object.hasOwn(top.values, name)) throw new ComposeSchemaError(child(top.path, name), `duplicate field \`${name}\``);
      top.field = name;
    } else {
      top.field = undefined;
    }
  }

  endObject(): void {
    const top = this.#top();
    if (top?.kind === 'skip') {
      this.#endSkip(top);
      return;
    }
    this.#stack.pop();
    if (top?.kind === 'enum-map') {
      if (top.variant === null) throw new ComposeSchemaError(top.path, `invalid type: empty map, expected ${describeType(top.type)}`);
      top.deliver(top.variant);
      return;
    }
    const s = top as StructFrame;
    for (const field of s.type.required) {
      if (!Object.hasOwn(s.values, field)) throw new ComposeSchemaError(child(s.path, field), `missing field \`${field}\``);
    }
    s.deliver(s.values);
  }

  startArray(): void {
    const top = this.#top();
    if (top?.kind === 'skip') {
      top.depth++;
      return;
    }
    const { type, path, deliver } = this.#expect();
    const t = type.t === 'option' ? type.of : type;
    if (t.t === 'any') this.#stack.push({ kind: 'skip', depth: 1 });
    else if (t.t === 'vec') this.#stack.push({ kind: 'vec', of: t.of, path, deliver, values: t.of.t === 'struct' ? [] : null, count: 0 });
    else this.#invalidType(path, 'sequence', type);
  }

  endArray(): void {
    const top = this.#top();
    if (top?.kind === 'skip') {
      this.#endSkip(top);
      return;
    }
    this.#stack.pop();
    const v = top as VecFrame;
    v.deliver(v.values ?? undefined);
  }

  startString(): void {
    const top = this.#top();
    if (top?.kind === 'skip') return;
    const { type, path, deliver } = this.#expect();
    const t = type.t === 'option' ? type.of : type;
    if (t.t === 'any' || t.t === 'string' || t.t === 'hex' || t.t === 'size' || t.t === 'enum') {
      this.#stack.push({ kind: 'string', type: t, path, deliver, text: '', length: 0, hexOk: true });
    } else {
      this.#invalidType(path, 'string', type);
    }
  }

  chunk(text: string): void {
    const top = this.#top();
    if (top?.kind !== 'string') return;
    top.length += text.length;
    if (top.type.t === 'hex') {
      if (top.hexOk) for (let i = 0; i < text.length; i++) if (!isHexDigit(text.charCodeAt(i))) top.hexOk = false;
    } else if ((top.type.t === 'enum' || top.type.t === 'size') && top.length <= MAX_KEPT_STRING) {
      top.text += text;
    }
  }

  endString(): void {
    const top = this.#top();
    if (top?.kind !== 'string') return;
    this.#stack.pop();
    const { type, path } = top;
    if (type.t === 'hex') {
      if (!top.hexOk) throw new ComposeSchemaError(path, 'invalid hex string: a character is not a hex digit');
      if (top.length % 2 !== 0) throw new ComposeSchemaError(path, 'invalid hex string: odd number of digits');
    } else if (type.t === 'enum') {
      if (top.length > MAX_KEPT_STRING || !type.variants.includes(top.text)) {
        throw new ComposeSchemaError(path, `unknown variant ${JSON.stringify(top.text.slice(0, 64))}, expected one of ${type.variants.map((v) => `\`${v}\``).join(', ')}`);
      }
      top.deliver(top.text);
      return;
    } else if (type.t === 'size') {
      // A size string padded beyond MAX_KEPT_STRING is refused here though upstream would trim it.
      const size = top.length > MAX_KEPT_STRING ? 'memory size string too long' : parseMemorySize(top.text);
      if (typeof size === 'string') throw new ComposeSchemaError(path, size);
      top.deliver(size);
      return;
    }
    top.deliver(undefined);
  }

  number(lexeme: string): void {
    const top = this.#top();
    if (top?.kind === 'skip') return;
    const { type, path, deliver } = this.#expect();
    const t = type.t === 'option' ? type.of : type;
    if (t.t === 'any') {
      deliver(undefined);
      return;
    }
    const kind = classifyNumber(lexeme);
    if (t.t === 'uint') {
      if (kind === 'float') this.#invalidType(path, `floating point \`${lexeme}\``, type);
      if (kind === 'negative' || BigInt(lexeme.replace('…', '0')) > t.max) {
        throw new ComposeSchemaError(path, `invalid value: integer \`${lexeme}\`, expected ${t.name}`);
      }
      deliver(BigInt(lexeme));
      return;
    }
    if (t.t === 'size') {
      if (kind === 'float') this.#invalidType(path, `floating point \`${lexeme}\``, type);
      if (kind === 'negative') throw new ComposeSchemaError(path, 'memory size cannot be negative');
      // Past u64 serde_json reads the integer as a float.
      if (BigInt(lexeme.replace('…', '0')) > U64_MAX) this.#invalidType(path, `floating point \`${lexeme}\``, type);
      deliver(BigInt(lexeme));
      return;
    }
    this.#invalidType(path, kind === 'float' ? `floating point \`${lexeme}\`` : `integer \`${lexeme}\``, type);
  }

  literal(value: boolean | null): void {
    const top = this.#top();
    if (top?.kind === 'skip') return;
    if (top?.kind === 'enum-map' && top.awaitingValue) {
      // A unit variant's value in the map form must be null.
      if (value !== null) throw new ComposeSchemaError(top.path, `invalid type: boolean \`${value}\`, expected unit`);
      top.awaitingValue = false;
      return;
    }
    const { type, path, deliver } = this.#expect();
    if (type.t === 'any') {
      deliver(undefined);
      return;
    }
    if (value === null) {
      if (type.t === 'option') {
        deliver(null);
        return;
      }
      this.#invalidType(path, 'null', type);
    }
    const t = type.t === 'option' ? type.of : type;
    if (t.t !== 'bool') this.#invalidType(path, `boolean \`${value}\``, type);
    deliver(value);
  }

  // ------------------------------------------------------------------------------------------

  #top(): Frame | undefined {
    return this.#stack[this.#stack.length - 1];
  }

  /** The type due for the value that starts now, where it is, and what receives it. */
  #expect(): { type: Type; path: string; deliver: Deliver } {
    const top = this.#top();
    if (top === undefined) {
      if (this.#rootDone) throw new ComposeSchemaError('', 'more than one document');
      return {
        type: APP_COMPOSE,
        path: '',
        deliver: (v) => {
          this.#root = v as { [key: string]: Value };
          this.#rootDone = true;
        },
      };
    }
    if (top.kind === 'struct') {
      const field = top.field;
      if (field === undefined) return { type: ANY, path: top.path, deliver: () => {} };
      return { type: top.type.fields[field] as Type, path: child(top.path, field), deliver: (v) => void (top.values[field] = v) };
    }
    if (top.kind === 'vec') {
      return {
        type: top.of,
        path: `${top.path}[${top.count}]`,
        deliver: (v) => {
          top.count++;
          top.values?.push(v);
        },
      };
    }
    if (top.kind === 'enum-map') {
      throw new ComposeSchemaError(top.path, 'invalid type: expected unit (null) as the variant value');
    }
    // A string frame never sees a value start; skip frames are handled by the callers.
    throw new ComposeSchemaError('', 'internal: unexpected value');
  }

  #endSkip(frame: SkipFrame): void {
    if (--frame.depth === 0) this.#stack.pop();
  }

  #invalidType(path: string, got: string, expected: Type): never {
    throw new ComposeSchemaError(path, `invalid type: ${got}, expected ${describeType(expected)}`);
  }
}

function child(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}
