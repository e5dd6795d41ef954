// Argument checks shared by the native wrappers: precise TypeErrors before anything reaches C++.

export function invalidArg(name: string, value: unknown, expected: string): TypeError {
  return Object.assign(new TypeError(`${name} must be ${expected}, got ${JSON.stringify(value)}`), {
    code: 'ERR_INVALID_ARG_VALUE',
  });
}

export function isFd(fd: unknown): fd is number {
  return Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= 0x7fffffff;
}
