import { describe, expect, it } from 'vitest';
import { JsonSyntaxError, JsonTokenizer, MAX_DEPTH, type JsonVisitor } from '../../../src/registry/json-stream.js';

/** Rebuilds the value from the events, so a document can be compared with JSON.parse's reading. */
class Builder implements JsonVisitor {
  readonly stack: { container: unknown[] | Record<string, unknown>; key: string | null }[] = [];
  value: unknown;
  done = false;
  chunks = 0;
  #string: string | null = null;
  #put(v: unknown): void {
    const top = this.stack[this.stack.length - 1];
    if (top === undefined) {
      this.value = v;
      this.done = true;
    } else if (Array.isArray(top.container)) top.container.push(v);
    else top.container[top.key as string] = v;
  }
  startObject(): void {
    const o = {};
    this.#put(o);
    this.stack.push({ container: o, key: null });
  }
  key(name: string | null): void {
    (this.stack[this.stack.length - 1] as { key: string | null }).key = name ?? '(too long)';
  }
  endObject(): void {
    this.stack.pop();
  }
  startArray(): void {
    const a: unknown[] = [];
    this.#put(a);
    this.stack.push({ container: a, key: null });
  }
  endArray(): void {
    this.stack.pop();
  }
  startString(): void {
    this.#string = '';
  }
  chunk(text: string): void {
    this.chunks++;
    this.#string += text;
  }
  endString(): void {
    this.#put(this.#string);
    this.#string = null;
  }
  number(lexeme: string): void {
    this.#put(Number(lexeme));
  }
  literal(value: boolean | null): void {
    this.#put(value);
  }
}

/** Feeds `text` cut at the given positions. */
function read(text: string, cuts: number[] = []): Builder {
  const b = new Builder();
  const t = new JsonTokenizer(b);
  let at = 0;
  for (const c of [...cuts, text.length]) {
    t.write(text.slice(at, c));
    at = c;
  }
  t.end();
  return b;
}

function errorOf(text: string, cuts: number[] = []): string {
  try {
    read(text, cuts);
  } catch (err) {
    if (err instanceof JsonSyntaxError) return err.message;
    throw err;
  }
  return 'no error';
}

let seed = 12345;
const rnd = (n: number): number => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};

const SAMPLES = [
  '{}',
  '[]',
  '""',
  '0',
  '-0',
  '1.5e-3',
  '-12.25E+2',
  'true',
  ' null ',
  '{"a":[1,2,{"b":"c"}],"d":false,"e":null,"f":-0.5}',
  '"esc: \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\ud83d\\ude00 end"',
  '"raw: é 😀 中文"',
  JSON.stringify({ tcb: JSON.stringify({ app_compose: JSON.stringify({ name: 'x"y\\z', nested: ['\n', '\u0001'] }) }) }),
  '[[[[[["deep"]]]]]]',
  '{"dup":1,"dup":2}',
];

describe('JsonTokenizer', () => {
  it.each(SAMPLES)('reads %s as JSON.parse does, however it is cut', (text) => {
    const expected = JSON.parse(text) as unknown;
    expect(read(text).value).toEqual(expected);
    for (let k = 0; k < 30; k++) {
      const cuts = [...new Set(Array.from({ length: 1 + rnd(6) }, () => rnd(text.length + 1)))].sort((a, b) => a - b);
      expect(read(text, cuts).value, `cuts ${cuts.join(',')}`).toEqual(expected);
    }
    // One character at a time: every escape, number and literal split everywhere.
    expect(read(text, Array.from({ length: text.length }, (_, i) => i)).value).toEqual(expected);
  });

  it('hands a string over in about one chunk per write, never splitting a surrogate pair', () => {
    const text = `"${'\\ud83d\\ude00'.repeat(1000)}"`;
    for (let cut = 1; cut < 40; cut++) {
      const b = new Builder();
      const t = new JsonTokenizer(b);
      for (let at = 0; at < text.length; at += cut) t.write(text.slice(at, at + cut));
      t.end();
      expect(b.value).toBe('😀'.repeat(1000));
    }
    const big = read(`"${'x'.repeat(100_000)}"`, [50_000]);
    expect(big.chunks).toBe(2);
  });

  it.each([
    ['', /empty document/],
    ['{', /unexpected end/],
    ['{"a":1,}', /expected an object key/],
    ['[1,]', /expected a value/],
    ['[1 2]', /expected ','/],
    ['{"a" 1}', /expected ':'/],
    ['01', /leading zero/],
    ['1.', /invalid number/],
    ['-', /invalid number/],
    ['1e', /invalid number/],
    ['.5', /expected a value/],
    ['+1', /expected a value/],
    ['tru', /unexpected end/],
    ['nul1', /invalid literal/],
    ['"abc', /unexpected end/],
    ['"a\nb"', /invalid escape or control character/],
    ['"\\x"', /invalid escape/],
    ['"\\u12g4"', /invalid escape/],
    ['"\\ud83d"', /lone surrogate/],
    ['"\\ude00"', /lone surrogate/],
    ['"\\ud83dx"', /lone surrogate/],
    ['1 2', /trailing characters/],
    ['{} x', /trailing characters/],
    ["{'a':1}", /expected an object key/],
    ['[1] // comment', /trailing characters/],
    ['\ufeff{}', /expected a value/],
    ['NaN', /expected a value/],
  ])('refuses %j', (text, why) => {
    expect(errorOf(text)).toMatch(why);
    // However it is cut, it is refused.
    expect(errorOf(text, Array.from({ length: text.length }, (_, i) => i))).not.toBe('no error');
  });

  it("refuses 128 nested levels as serde_json does (127 parse), without recursion of its own", () => {
    expect(MAX_DEPTH).toBe(127);
    expect(read(`${'['.repeat(MAX_DEPTH)}${']'.repeat(MAX_DEPTH)}`).done).toBe(true);
    expect(errorOf(`${'['.repeat(MAX_DEPTH + 1)}${']'.repeat(MAX_DEPTH + 1)}`)).toMatch(/nested deeper/);
    expect(errorOf('['.repeat(1_000_000))).toMatch(/nested deeper/);
  });

  it('keeps number lexemes as written (8080.0 is not 8080 to serde), cut when absurdly long', () => {
    const lexemes: string[] = [];
    const b = new Builder();
    b.number = (l: string) => void lexemes.push(l);
    const t = new JsonTokenizer(b);
    t.write(`[8080, 8080.0, -0, 1e3, ${'9'.repeat(100)}]`);
    t.end();
    expect(lexemes.slice(0, 4)).toEqual(['8080', '8080.0', '-0', '1e3']);
    expect(lexemes[4]).toMatch(/^9{40}…$/);
  });

  it('reports over-long keys as null (no schema field is that long)', () => {
    expect(read(`{"${'k'.repeat(300)}": 1}`).value).toEqual({ '(too long)': 1 });
  });

  it('stays failed after an error', () => {
    const t = new JsonTokenizer(new Builder());
    expect(() => t.write('[1,,')).toThrow(JsonSyntaxError);
    expect(() => t.write(']')).toThrow(/expected a value/);
    expect(() => t.end()).toThrow(/expected a value/);
  });
});
