// Daemon errors: one class per failure family, each with a stable `code` to branch on.
import { getSystemErrorName } from 'node:util';

export class InterceptorError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

export class ConfigError extends InterceptorError {
  /** The dotted key the problem is about, e.g. `intercept.targets[0].cidr`. */
  readonly key: string;
  constructor(key: string, problem: string) {
    super('ERR_CONFIG', `config: ${key}: ${problem}`);
    this.key = key;
  }
}

export interface SystemError extends Error {
  code: string;
  errno: number;
  syscall: string;
  address?: string;
  port?: number;
}

/** A Node-shaped system error from a negative errno returned by the addon. */
export function systemError(
  negErrno: number,
  syscall: string,
  details: { address?: string; port?: number; hint?: string } = {},
): SystemError {
  const code = getSystemErrorName(negErrno);
  let where = '';
  if (details.address !== undefined) where = ` ${details.address}${details.port !== undefined ? `:${details.port}` : ''}`;
  const hint = details.hint ? ` (${details.hint})` : '';
  const err = new Error(`${syscall} ${code}${where}${hint}`) as SystemError;
  err.code = code;
  err.errno = negErrno;
  err.syscall = syscall;
  if (details.address !== undefined) err.address = details.address;
  if (details.port !== undefined) err.port = details.port;
  return err;
}
