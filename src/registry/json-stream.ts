// A streaming JSON tokenizer: text in (any chunking), events out, nothing buffered but the
// current key or number. Hand-written because of what the policy fetch needs and JSON.parse (or
// a buffering tokenizer) cannot give: the app_compose document arrives as a string inside a
// string (tcb_info) inside the Info response, up to 50 MiB before escaping; it must be hashed and
// checked as the bytes arrive, without holding a copy per level and without one long event-loop
// stall; and checking it as serde does upstream needs number lexemes (8080.0 is not a u16) and
// duplicate keys, which JSON.parse erases.
//
// Strict RFC 8259 as serde_json reads it: no comments, no trailing commas, no leading zeros, no
// raw control characters in strings, escaped surrogates must pair, at most MAX_DEPTH nested
// arrays/objects, one value per document.

export interface JsonVisitor {
  startObject(): void;
  /** An object key; null when it is longer than MAX_KEY_LENGTH (no schema has such a field). */
  key(name: string | null): void;
  endObject(): void;
  startArray(): void;
  endArray(): void;
  /**
   * A string value: startString, then its unescaped text in chunks (about one per write(), never
   * splitting a surrogate pair), then endString.
   */
  startString(): void;
  chunk(text: string): void;
  endString(): void;
  /** The number's lexeme as written (cut at MAX_NUMBER_LENGTH, marked with a trailing "…"). */
  number(lexeme: string): void;
  literal(value: boolean | null): void;
}

export class JsonSyntaxError extends Error {
  /** Characters consumed before the error. */
  readonly offset: number;
  constructor(problem: string, offset: number) {
    super(`${problem} at character ${offset}`);
    this.offset = offset;
  }
}

/** serde_json's recursion limit: 128 nested arrays/objects fail, 127 parse. */
export const MAX_DEPTH = 127;
const MAX_KEY_LENGTH = 256;
const MAX_NUMBER_LENGTH = 40;

const enum S {
  Value, // a value is due (after '[' this also accepts ']', see `arrayStart`)
  KeyOrEnd, // after '{'
  Key, // after ',' in an object
  Colon,
  CommaOrEnd,
  Done, // after the top-level value: only whitespace
  String, // inside a string (key or value)
  Number,
  Literal,
}

// Number sub-states: what the next character may be.
const enum N {
  Minus, // after '-': a digit
  Zero, // after a leading 0: '.', 'e', or the end
  Int, // in the integer digits
  Dot, // after '.': a digit
  Frac, // in the fraction
  Exp, // after 'e': sign or digit
  ExpSign, // after the exponent sign: a digit
  ExpDigits,
}

const LITERALS = ['true', 'false', 'null'] as const;
const BACKSLASH = 0x5c;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Where a string segment that starts at `from` may be cut at the end of `t` without splitting an
 * escape: before the last unescaped backslash when its escape is not complete yet.
 */
function safeCut(t: string, from: number): number {
  const n = t.length;
  for (let b = n - 1; b >= Math.max(from, n - 6); b--) {
    if (t.charCodeAt(b) !== BACKSLASH) continue;
    let run = 1;
    while (b - run >= from && t.charCodeAt(b - run) === BACKSLASH) run++;
    // An even run ending here: this backslash is itself escaped, the escape before it complete.
    if (run % 2 === 0) return n;
    const need = t.charCodeAt(b + 1) === 0x75 /* u */ ? 6 : 2;
    return b + need > n ? b : n;
  }
  return n;
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

export class JsonTokenizer {
  readonly #v: JsonVisitor;
  #state = S.Value;
  /** Container stack: true = object, false = array. */
  readonly #stack: boolean[] = [];
  #arrayStart = false;
  #inKey = false;
  #key = '';
  #keyTooLong = false;
  /** The start of an escape cut off at the end of the last write(), for the next one. */
  #carry = '';
  /** A high surrogate (from \uD8xx) that ended the last segment, waiting for its \uDCxx. */
  #high = '';
  #num = N.Minus;
  #numText = '';
  #literal = '';
  #literalAt = 0;
  #offset = 0;
  #failed: JsonSyntaxError | null = null;

  constructor(visitor: JsonVisitor) {
    this.#v = visitor;
  }

  /** Feeds the next piece of the document. Throws JsonSyntaxError (and stays failed). */
  write(text: string): void {
    if (this.#failed !== null) throw this.#failed;
    try {
      this.#run(text);
    } catch (err) {
      if (err instanceof JsonSyntaxError) this.#failed = err;
      throw err;
    }
  }

  /** The document is complete: throws unless exactly one whole value was read. */
  end(): void {
    if (this.#failed !== null) throw this.#failed;
    if (this.#state === S.Number) this.#endNumber();
    if (this.#state !== S.Done) {
      this.#failed = new JsonSyntaxError(this.#state === S.Value && this.#stack.length === 0 && this.#offset === 0 ? 'empty document' : 'unexpected end of document', this.#offset);
      throw this.#failed;
    }
  }

  #fail(problem: string, at: number): never {
    throw new JsonSyntaxError(problem, this.#offset + at);
  }

  #run(text: string): void {
    // Text held back from the last write is the start of an escape in a string: finish it first.
    const t = this.#carry === '' ? text : this.#carry + text;
    this.#offset -= this.#carry.length;
    this.#carry = '';
    const n = t.length;
    let i = 0;
    while (i < n) {
      switch (this.#state) {
        case S.String:
          i = this.#string(t, i);
          break;
        case S.Number: {
          const c = t.charCodeAt(i);
          if (this.#numberChar(c, i)) {
            if (this.#numText.length < MAX_NUMBER_LENGTH) this.#numText += t[i];
            else if (!this.#numText.endsWith('…')) this.#numText += '…';
            i++;
          } else {
            this.#endNumber();
          }
          break;
        }
        case S.Literal: {
          if (t[i] !== this.#literal[this.#literalAt]) this.#fail(`invalid literal (expected ${this.#literal})`, i);
          i++;
          if (++this.#literalAt === this.#literal.length) {
            const word = this.#literal;
            this.#v.literal(word === 'true' ? true : word === 'false' ? false : null);
            this.#afterValue();
          }
          break;
        }
        default: {
          const c = t.charCodeAt(i);
          if (isWs(c)) {
            i++;
            break;
          }
          this.#structural(c, i);
          i++;
        }
      }
    }
    this.#offset += n;
  }

  /**
   * Reads string content from `i`: up to the closing quote, or to the end of `t` (keeping an
   * incomplete escape for the next write). Unescaping is JSON.parse's, on the whole segment at
   * once: a per-character loop in JavaScript is several times slower on text that is escaped
   * twice, like tcb_info's app_compose. Returns where to continue.
   */
  #string(t: string, i: number): number {
    const n = t.length;
    // The closing quote is a '"' after an even number of backslashes (counted from i, where no
    // escape is open).
    let end = -1;
    for (let q = t.indexOf('"', i); q !== -1; q = t.indexOf('"', q + 1)) {
      let run = 0;
      while (q - run - 1 >= i && t.charCodeAt(q - run - 1) === BACKSLASH) run++;
      if (run % 2 === 0) {
        end = q;
        break;
      }
    }
    const cut = end !== -1 ? end : safeCut(t, i);
    if (cut > i || this.#high !== '') {
      let text = '';
      if (cut > i) {
        try {
          text = JSON.parse(`"${t.slice(i, cut)}"`) as string;
        } catch {
          this.#fail('invalid escape or control character in a string', i);
        }
      }
      text = this.#high + text;
      this.#high = '';
      // A high surrogate that ends the segment may be completed by the next one.
      const last = text.charCodeAt(text.length - 1);
      if (end === -1 && last >= 0xd800 && last <= 0xdbff) {
        this.#high = text[text.length - 1] as string;
        text = text.slice(0, -1);
      }
      if (LONE_SURROGATE.test(text)) this.#fail('lone surrogate in a \\u escape', i);
      if (text !== '') this.#text(text);
    }
    if (end === -1) {
      this.#carry = t.slice(cut);
      return n;
    }
    this.#endString();
    return end + 1;
  }

  #structural(c: number, at: number): void {
    switch (this.#state) {
      case S.Value:
        if (c === 0x5d /* ] */ && this.#arrayStart) {
          this.#arrayStart = false;
          this.#close(false, at);
          return;
        }
        this.#arrayStart = false;
        this.#value(c, at);
        return;
      case S.KeyOrEnd:
        if (c === 0x7d /* } */) {
          this.#close(true, at);
          return;
        }
      // falls through
      case S.Key:
        if (c !== 0x22) this.#fail('expected an object key (a string)', at);
        this.#inKey = true;
        this.#key = '';
        this.#keyTooLong = false;
        this.#state = S.String;
        return;
      case S.Colon:
        if (c !== 0x3a) this.#fail("expected ':'", at);
        this.#state = S.Value;
        return;
      case S.CommaOrEnd: {
        const inObject = this.#stack[this.#stack.length - 1] as boolean;
        if (c === 0x2c) {
          this.#state = inObject ? S.Key : S.Value;
          return;
        }
        if (c === (inObject ? 0x7d : 0x5d)) {
          this.#close(inObject, at);
          return;
        }
        this.#fail(inObject ? "expected ',' or '}'" : "expected ',' or ']'", at);
      }
      // eslint-disable-next-line no-fallthrough
      case S.Done:
        this.#fail('trailing characters after the document', at);
    }
  }

  #value(c: number, at: number): void {
    if (c === 0x7b || c === 0x5b) {
      if (this.#stack.length >= MAX_DEPTH) this.#fail(`nested deeper than ${MAX_DEPTH} levels`, at);
      const object = c === 0x7b;
      this.#stack.push(object);
      if (object) {
        this.#v.startObject();
        this.#state = S.KeyOrEnd;
      } else {
        this.#v.startArray();
        this.#state = S.Value;
        this.#arrayStart = true;
      }
      return;
    }
    if (c === 0x22) {
      this.#inKey = false;
      this.#v.startString();
      this.#state = S.String;
      return;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.#state = S.Number;
      this.#num = c === 0x2d ? N.Minus : c === 0x30 ? N.Zero : N.Int;
      this.#numText = String.fromCharCode(c);
      return;
    }
    const word = c === 0x74 ? LITERALS[0] : c === 0x66 ? LITERALS[1] : c === 0x6e ? LITERALS[2] : null;
    if (word === null) this.#fail('expected a value', at);
    this.#state = S.Literal;
    this.#literal = word;
    this.#literalAt = 1;
  }

  /** Advances the number grammar; false when `c` does not continue the number. */
  #numberChar(c: number, at: number): boolean {
    const digit = c >= 0x30 && c <= 0x39;
    switch (this.#num) {
      case N.Minus:
        if (!digit) this.#fail('invalid number', at);
        this.#num = c === 0x30 ? N.Zero : N.Int;
        return true;
      case N.Zero:
        if (digit) this.#fail('invalid number (leading zero)', at);
      // falls through
      case N.Int:
        if (digit) return true;
        if (c === 0x2e) {
          this.#num = N.Dot;
          return true;
        }
        if (c === 0x65 || c === 0x45) {
          this.#num = N.Exp;
          return true;
        }
        return false;
      case N.Dot:
        if (!digit) this.#fail('invalid number', at);
        this.#num = N.Frac;
        return true;
      case N.Frac:
        if (digit) return true;
        if (c === 0x65 || c === 0x45) {
          this.#num = N.Exp;
          return true;
        }
        return false;
      case N.Exp:
        if (c === 0x2b || c === 0x2d) {
          this.#num = N.ExpSign;
          return true;
        }
      // falls through
      case N.ExpSign:
        if (!digit) this.#fail('invalid number', at);
        this.#num = N.ExpDigits;
        return true;
      case N.ExpDigits:
        return digit;
    }
  }

  #endNumber(): void {
    if (this.#num === N.Minus || this.#num === N.Dot || this.#num === N.Exp || this.#num === N.ExpSign) {
      this.#fail('invalid number', 0);
    }
    this.#v.number(this.#numText);
    this.#afterValue();
  }

  #text(s: string): void {
    if (this.#inKey) {
      if (this.#keyTooLong) return;
      if (this.#key.length + s.length > MAX_KEY_LENGTH) {
        this.#keyTooLong = true;
        this.#key = '';
      } else {
        this.#key += s;
      }
      return;
    }
    this.#v.chunk(s);
  }

  #endString(): void {
    if (this.#inKey) {
      this.#inKey = false;
      this.#v.key(this.#keyTooLong ? null : this.#key);
      this.#key = '';
      this.#state = S.Colon;
      return;
    }
    this.#v.endString();
    this.#afterValue();
  }

  #close(object: boolean, at: number): void {
    if (this.#stack.pop() !== object) this.#fail('mismatched bracket', at);
    if (object) this.#v.endObject();
    else this.#v.endArray();
    this.#afterValue();
  }

  #afterValue(): void {
    this.#state = this.#stack.length === 0 ? S.Done : S.CommaOrEnd;
  }
}
