// The guest agent's Info response, from untrusted bytes to an attested port policy. Pure: no
// I/O. The body is read as it arrives (InfoResponseReader): tcb_info (a JSON string inside the
// response) is parsed as its text is unescaped, and app_compose (a JSON string inside tcb_info)
// is hashed and checked against AppCompose as its text is unescaped in turn, so no level is ever
// held in memory whole. Which failures are transient and which permanent follows the dstack
// gateway (gateway/src/proxy/port_policy.rs, fetch_port_policy). The compose hash check is ours:
// the gateway does not verify that the app_compose it fetched is the one measured into RTMR3.
import { createHash, type Hash } from 'node:crypto';
import { InterceptorError, type ErrorCode } from '../errors.js';
import { AppComposeReader, ComposeSchemaError } from './app-compose.js';
import { JsonSyntaxError, JsonTokenizer, type JsonVisitor } from './json-stream.js';
import { EMPTY_POLICY, normalizeComposeHash } from './policy.js';
import type { PortPolicy } from './types.js';

/**
 * Anything that stops a policy from being learned. `permanent` errors are not retried:
 * asking again would get the same answer.
 */
export class PolicyFetchError extends InterceptorError {
  readonly permanent: boolean;
  /** ERR_AGENT_HTTP: the status the agent answered with. */
  readonly status?: number;
  /** ERR_COMPOSE_HASH_MISMATCH: the attested hash and the one the fetched bytes hash to. */
  readonly expectedHash?: string;
  readonly actualHash?: string;
  /** ERR_AGENT_CONNECT: the system error's code (`ECONNREFUSED`, `ECONNRESET`, ...); the error itself is `cause`. */
  readonly systemCode?: string;
  /** ERR_COMPOSE_INVALID: the dotted path of the app_compose field at fault ('' for the document). */
  readonly field?: string;
  constructor(
    code: ErrorCode,
    message: string,
    options: {
      permanent: boolean;
      cause?: unknown;
      status?: number;
      expectedHash?: string;
      actualHash?: string;
      systemCode?: string;
      field?: string;
    },
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.permanent = options.permanent;
    if (options.status !== undefined) this.status = options.status;
    if (options.expectedHash !== undefined) this.expectedHash = options.expectedHash;
    if (options.actualHash !== undefined) this.actualHash = options.actualHash;
    if (options.systemCode !== undefined) this.systemCode = options.systemCode;
    if (options.field !== undefined) this.field = options.field;
  }
}

/** What one Info response says, before anything in it is believed. */
export interface InfoFacts {
  /** Info.compose_hash, normalised; null when absent, null or "". */
  readonly composeHash: string | null;
  /** tcb_info was "" (the app set public_tcbinfo = false). */
  readonly tcbInfoEmpty: boolean;
  /** tcb_info is not JSON: why (a permanent failure). */
  readonly tcbInfoError: string | null;
  /** tcb_info.compose_hash as written (null when absent); checked against app_compose. */
  readonly tcbComposeHash: string | null;
  /**
   * tcb_info's app_compose (the last one, as serde_json's map keeps it): the SHA-256 of its text
   * (as UTF-8, no normalisation: the compose hash), and its policy, or why it does not parse.
   * null: there is no app_compose string.
   */
  readonly appCompose: { readonly sha256: string; readonly policy: PortPolicy | null; readonly error: PolicyFetchError | null } | null;
}

function undecodable(problem: string): PolicyFetchError {
  return new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', `Info response ${problem}`, { permanent: false });
}

/** Longest string kept where its text matters (hashes): anything longer is invalid anyway. */
const MAX_SHORT_STRING = 256;

/**
 * A visitor that follows the nesting and hands the depth-1 members of the root object to
 * `member`; everything else it only walks over.
 */
abstract class RootObjectVisitor implements JsonVisitor {
  #depth = 0;
  #key: string | null = null;
  /** The depth-1 string value being read, if it is wanted. */
  protected stringSink: { chunk(text: string): void; end(): void } | null = null;
  protected rootIsObject = false;

  protected abstract onRootNotObject(): void;
  /** A depth-1 member's value starts: what kind, under which key. Return a sink for a string value. */
  protected abstract onMember(key: string | null, kind: 'object' | 'array' | 'string' | 'number' | 'literal', value?: boolean | null): { chunk(text: string): void; end(): void } | null;

  #valueStart(kind: 'object' | 'array' | 'string' | 'number' | 'literal', value?: boolean | null): void {
    if (this.#depth === 0 && kind !== 'object') this.onRootNotObject();
    if (this.#depth === 1) this.stringSink = this.onMember(this.#key, kind, value);
  }

  startObject(): void {
    this.#valueStart('object');
    if (this.#depth === 0) this.rootIsObject = true;
    this.#depth++;
  }
  key(name: string | null): void {
    if (this.#depth === 1) this.#key = name;
  }
  endObject(): void {
    this.#depth--;
  }
  startArray(): void {
    this.#valueStart('array');
    this.#depth++;
  }
  endArray(): void {
    this.#depth--;
  }
  startString(): void {
    this.#valueStart('string');
  }
  chunk(text: string): void {
    this.stringSink?.chunk(text);
  }
  endString(): void {
    const sink = this.stringSink;
    this.stringSink = null;
    sink?.end();
  }
  number(): void {
    this.#valueStart('number');
  }
  literal(value: boolean | null): void {
    this.#valueStart('literal', value);
  }
}

/** A short string value, kept whole (or marked too long). */
function shortString(done: (text: string | null) => void): { chunk(text: string): void; end(): void } {
  let text = '';
  let tooLong = false;
  return {
    chunk(t) {
      if (tooLong) return;
      if (text.length + t.length > MAX_SHORT_STRING) tooLong = true;
      else text += t;
    },
    end() {
      done(tooLong ? null : text);
    },
  };
}

/** One app_compose string: hashed as UTF-8 and checked against AppCompose as it streams. */
class AppComposeSink {
  readonly #hash: Hash = createHash('sha256');
  readonly #reader = new AppComposeReader();
  readonly #tokenizer = new JsonTokenizer(this.#reader);
  #error: PolicyFetchError | null = null;
  result: InfoFacts['appCompose'] = null;

  chunk(text: string): void {
    this.#hash.update(text, 'utf8');
    if (this.#error !== null) return;
    try {
      this.#tokenizer.write(text);
    } catch (err) {
      this.#error = composeError(err);
    }
  }

  end(): void {
    let policy: PortPolicy | null = null;
    if (this.#error === null) {
      try {
        this.#tokenizer.end();
        policy = this.#reader.policy();
      } catch (err) {
        this.#error = composeError(err);
      }
    }
    this.result = { sha256: this.#hash.digest('hex'), policy, error: this.#error };
  }
}

function composeError(err: unknown): PolicyFetchError {
  if (err instanceof JsonSyntaxError) {
    return new PolicyFetchError('ERR_COMPOSE_INVALID', `app_compose is not JSON: ${err.message}`, { permanent: true, field: '' });
  }
  if (err instanceof ComposeSchemaError) {
    return new PolicyFetchError('ERR_COMPOSE_INVALID', `app_compose does not parse as AppCompose: ${err.message}`, {
      permanent: true,
      field: err.field,
    });
  }
  throw err;
}

/** tcb_info's JSON: its depth-1 `app_compose` (last wins) and `compose_hash`. */
class TcbInfoVisitor extends RootObjectVisitor {
  appCompose: AppComposeSink | null = null;
  /** undefined: absent; null: present but not a short string. */
  composeHash: string | null | undefined = undefined;

  protected onRootNotObject(): void {}

  protected onMember(key: string | null, kind: string): { chunk(text: string): void; end(): void } | null {
    if (key === 'app_compose') {
      this.appCompose = kind === 'string' ? new AppComposeSink() : null;
      return this.appCompose;
    }
    if (key === 'compose_hash') {
      if (kind !== 'string') {
        this.composeHash = null;
        return null;
      }
      return shortString((text) => void (this.composeHash = text));
    }
    return null;
  }
}

/** The tcb_info string: parsed as JSON as its text streams in. */
class TcbInfoSink {
  readonly #visitor = new TcbInfoVisitor();
  readonly #tokenizer = new JsonTokenizer(this.#visitor);
  #length = 0;
  #error: string | null = null;
  done = false;

  chunk(text: string): void {
    this.#length += text.length;
    if (this.#error !== null) return;
    try {
      this.#tokenizer.write(text);
    } catch (err) {
      if (!(err instanceof JsonSyntaxError)) throw err;
      this.#error = err.message;
    }
  }

  end(): void {
    this.done = true;
    if (this.#error !== null || this.#length === 0) return;
    try {
      this.#tokenizer.end();
    } catch (err) {
      if (!(err instanceof JsonSyntaxError)) throw err;
      this.#error = err.message;
    }
  }

  facts(): Pick<InfoFacts, 'tcbInfoEmpty' | 'tcbInfoError' | 'tcbComposeHash' | 'appCompose'> {
    if (this.#length === 0) return { tcbInfoEmpty: true, tcbInfoError: null, tcbComposeHash: null, appCompose: null };
    if (this.#error !== null) return { tcbInfoEmpty: false, tcbInfoError: this.#error, tcbComposeHash: null, appCompose: null };
    const h = this.#visitor.composeHash;
    return {
      tcbInfoEmpty: false,
      tcbInfoError: null,
      // Present but not a hash: kept as written, so that the check against app_compose fails.
      tcbComposeHash: h === undefined ? null : h === null ? '(not a string)' : (normalizeComposeHash(h) ?? h),
      appCompose: this.#visitor.appCompose?.result ?? null,
    };
  }
}

/** The Info response's JSON: `compose_hash` and `tcb_info`; other members are not looked at. */
class InfoVisitor extends RootObjectVisitor {
  composeHash: string | null = null;
  tcbInfo: TcbInfoSink | null = null;
  readonly #seen = new Set<string>();

  protected onRootNotObject(): void {
    throw undecodable('is not a JSON object');
  }

  protected onMember(key: string | null, kind: string, value?: boolean | null): { chunk(text: string): void; end(): void } | null {
    if (key !== 'compose_hash' && key !== 'tcb_info') return null;
    // A typed message upstream: a member given twice does not decode.
    if (this.#seen.has(key)) throw undecodable(`has ${key} twice`);
    this.#seen.add(key);
    if (key === 'tcb_info') {
      if (kind !== 'string') throw undecodable('tcb_info is not a string');
      this.tcbInfo = new TcbInfoSink();
      return this.tcbInfo;
    }
    if (kind === 'literal' && value === null) return null; // as if absent
    if (kind !== 'string') throw undecodable('compose_hash is not a string');
    return shortString((text) => {
      if (text === '') return;
      const h = text === null ? null : normalizeComposeHash(text);
      if (h === null) throw undecodable('compose_hash is not a 64-digit hex compose hash');
      this.composeHash = h;
    });
  }
}

/**
 * Reads an Info response body chunk by chunk. write() and end() throw a transient
 * PolicyFetchError (ERR_AGENT_BAD_RESPONSE) when the response itself does not decode; what is
 * wrong inside tcb_info or app_compose is reported in the facts, as upstream only looks there
 * once the response decoded.
 */
export class InfoResponseReader {
  // serde_json reads bytes: invalid UTF-8 is an error there, and so is a byte-order mark.
  readonly #decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  readonly #visitor = new InfoVisitor();
  readonly #tokenizer = new JsonTokenizer(this.#visitor);

  write(chunk: Buffer): void {
    this.#feed(chunk, false);
  }

  end(): InfoFacts {
    this.#feed(undefined, true);
    try {
      this.#tokenizer.end();
    } catch (err) {
      throw translate(err);
    }
    const tcb = this.#visitor.tcbInfo;
    if (tcb === null || !tcb.done) throw undecodable('has no tcb_info');
    return { composeHash: this.#visitor.composeHash, ...tcb.facts() };
  }

  #feed(chunk: Buffer | undefined, last: boolean): void {
    let text: string;
    try {
      text = this.#decoder.decode(chunk, { stream: !last });
    } catch {
      throw undecodable('is not valid UTF-8');
    }
    if (text.length === 0) return;
    try {
      this.#tokenizer.write(text);
    } catch (err) {
      throw translate(err);
    }
  }
}

function translate(err: unknown): unknown {
  return err instanceof JsonSyntaxError ? undecodable(`is not JSON: ${err.message}`) : err;
}

function mismatch(what: string, expectedHash: string, actualHash: string): PolicyFetchError {
  return new PolicyFetchError('ERR_COMPOSE_HASH_MISMATCH', `${what}: expected compose hash ${expectedHash}, got ${actualHash}`, {
    permanent: true,
    expectedHash,
    actualHash,
  });
}

/**
 * The policy an Info response attests. `attestedHash` is the compose hash the registration
 * carried (normalised), or null when the operator chose to trust the agent's own
 * (registry.trust_agent_compose_hash). The app_compose text must hash to it, otherwise nothing
 * from it is believed.
 */
export function attestedPolicy(facts: InfoFacts, attestedHash: string | null): { policy: PortPolicy; composeHash: string } {
  const reported = facts.composeHash;
  if (attestedHash !== null && reported !== null && reported !== attestedHash) {
    throw mismatch('Info compose_hash differs from the registered one', attestedHash, reported);
  }
  const attested = attestedHash ?? reported;
  if (attested === null) {
    throw new PolicyFetchError('ERR_AGENT_BAD_RESPONSE', 'Info response has no compose_hash and the registration carried none', {
      permanent: false,
    });
  }
  // public_tcbinfo=false: the app publishes no compose; upstream caches the open policy.
  if (facts.tcbInfoEmpty) return { policy: EMPTY_POLICY, composeHash: attested };
  if (facts.tcbInfoError !== null) {
    throw new PolicyFetchError('ERR_AGENT_TCB_INFO', `tcb_info is not JSON: ${facts.tcbInfoError}`, { permanent: true });
  }
  const app = facts.appCompose;
  if (app === null) throw new PolicyFetchError('ERR_AGENT_NO_APP_COMPOSE', 'tcb_info has no app_compose string', { permanent: true });
  // Check the bytes before believing anything they say.
  if (app.sha256 !== attested) throw mismatch('app_compose does not hash to the attested compose hash', attested, app.sha256);
  if (facts.tcbComposeHash !== null && facts.tcbComposeHash !== app.sha256) {
    throw mismatch('tcb_info.compose_hash differs from app_compose', app.sha256, facts.tcbComposeHash);
  }
  if (app.error !== null) throw app.error;
  return { policy: app.policy as PortPolicy, composeHash: app.sha256 };
}
