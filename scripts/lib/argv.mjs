// The command-line grammar `npm run bench` and `npm run soak` share: `--option value` or
// `--option=value`, -h/--help, and the checks their options have in common. Pure; every error is
// thrown as the caller's usage error class (its code tells the runner to print the usage).

/**
 * @param {new (message: string) => Error} UsageError
 */
export function commandLine(UsageError) {
  return {
    /**
     * Walks argv and calls take(option, value) for each option of valueOptions, in order.
     * Unknown options throw; so do retired ones, naming why (retired: option → reason).
     * @param {string[]} argv
     * @param {Set<string>} valueOptions
     * @param {(option: string, value: string) => void} take
     * @param {Map<string, string>} [retired]
     * @returns {boolean} whether -h or --help was given
     */
    walk(argv, valueOptions, take, retired = new Map()) {
      let help = false;
      for (let i = 0; i < argv.length; i++) {
        let arg = argv[i];
        let value;
        const eq = arg.indexOf('=');
        if (arg.startsWith('--') && eq > 0) {
          value = arg.slice(eq + 1);
          arg = arg.slice(0, eq);
        }
        if (arg === '-h' || arg === '--help') {
          help = true;
          continue;
        }
        if (retired.has(arg)) throw new UsageError(`${arg} is no longer supported: ${retired.get(arg)}`);
        if (!valueOptions.has(arg)) throw new UsageError(`unknown argument ${JSON.stringify(argv[i])}`);
        if (value === undefined) {
          if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
          value = argv[++i];
        }
        take(arg, value);
      }
      return help;
    },

    /** A whole number in min..max; `what` replaces "a whole number in min..max" in the error. */
    wholeNumber(arg, value, min, max, what = `a whole number in ${min}..${max}`) {
      const n = Number(value);
      if (!/^\d+$/.test(value) || n < min || n > max) throw new UsageError(`${arg} must be ${what}, got ${JSON.stringify(value)}`);
      return n;
    },

    /** A comma-separated list of known names (each `noun`), at least one, none twice, in the given order. */
    names(arg, value, known, noun) {
      const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
      if (names.length === 0) throw new UsageError(`${arg} needs at least one ${noun}`);
      for (const n of names) {
        if (!known.includes(n)) throw new UsageError(`${arg}: unknown ${noun} ${JSON.stringify(n)}; known: ${known.join(', ')}`);
      }
      if (new Set(names).size !== names.length) throw new UsageError(`${arg} lists a ${noun} twice`);
      return names;
    },
  };
}
