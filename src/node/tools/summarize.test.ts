// Tests for the summarize tool: sentence splitting, scoring, ordering, edge cases and its JSON schemas.
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { isFieldmeshError } from '../../core/errors.js';
import { contentWords, STOPWORDS, splitSentences, summarizeText, summarizeTool } from './summarize.js';
import type { ToolContext } from './types.js';

// These tools never touch state documents, so the context has none.
const ctx = { node_id: 'node-a', task_id: 'task-1', attempt: 1, signal: new AbortController().signal } as ToolContext;
const ajv = new Ajv({ allErrors: true });
const validateInput = ajv.compile(summarizeTool.input_schema);
const validateOutput = ajv.compile(summarizeTool.output_schema);

const ARTICLE = [
  'Solar panels on the pump house now supply most of the power the pump station needs.',
  'The weather was pleasant on Tuesday.',
  'During sunny weeks the solar panels charge the station batteries fully by noon.',
  'A technician painted the fence green.',
  'When the batteries run low, the pump station switches back to grid power automatically.',
  'Lunch was served at twelve.',
].join(' ');

describe('summarize - sentence splitting', () => {
  it.each<[string, string, string[]]>([
    ['simple', 'One sentence. Another one! A third? Yes.', ['One sentence.', 'Another one!', 'A third?', 'Yes.']],
    ['titles', 'Dr. Smith met Mrs. Jones at noon. They talked.', ['Dr. Smith met Mrs. Jones at noon.', 'They talked.']],
    [
      'e.g. and i.e.',
      'Use a tool, e.g. a wrench. It works, i.e. it turns bolts.',
      ['Use a tool, e.g. a wrench.', 'It works, i.e. it turns bolts.'],
    ],
    ['e.g. before a capital', 'Pick a city, e.g. Paris or Rome. Then go.', ['Pick a city, e.g. Paris or Rome.', 'Then go.']],
    ['U.S. inside a sentence', 'The U.S. Army arrived. It rained.', ['The U.S. Army arrived.', 'It rained.']],
    ['U.S. at the end of a sentence', 'He moved to the U.S. He liked it.', ['He moved to the U.S.', 'He liked it.']],
    ['decimals', 'Pi is about 3.14 and e is 2.718. Both are irrational.', ['Pi is about 3.14 and e is 2.718.', 'Both are irrational.']],
    ['ellipsis inside a sentence', 'Wait... what happened? Nothing.', ['Wait... what happened?', 'Nothing.']],
    ['ellipsis ending a sentence', 'I waited… Then it came.', ['I waited…', 'Then it came.']],
    ['quotes after the terminator', 'She said "Stop." Then she left.', ['She said "Stop."', 'Then she left.']],
    ['mixed ?!', 'Really?! Yes. OK', ['Really?!', 'Yes.', 'OK']],
    ['initials', 'J. R. R. Tolkien wrote books. They sold well.', ['J. R. R. Tolkien wrote books.', 'They sold well.']],
    [
      'etc. before a new sentence',
      'Bring pens, paper, etc. The exam starts at nine.',
      ['Bring pens, paper, etc.', 'The exam starts at nine.'],
    ],
    [
      'paragraph break without punctuation',
      'Heading\n\nBody text here.\nStill the same sentence.',
      ['Heading', 'Body text here.', 'Still the same sentence.'],
    ],
    ['whitespace collapsed', '  Lots   of\tspace.   Here  ', ['Lots of space.', 'Here']],
    ['empty', '', []],
    ['only whitespace', ' \n\t ', []],
  ])('%s', (_name, text, expected) => {
    expect(splitSentences(text)).toEqual(expected);
  });
});

describe('summarize - scoring and selection', () => {
  it('keeps the sentences about the main topic, in original order', () => {
    const result = summarizeText(ARTICLE, 3);
    expect(result.sentences).toEqual([
      'Solar panels on the pump house now supply most of the power the pump station needs.',
      'During sunny weeks the solar panels charge the station batteries fully by noon.',
      'When the batteries run low, the pump station switches back to grid power automatically.',
    ]);
    expect(result.summary).toBe(result.sentences.join(' '));
    expect(result.sentence_count).toBe(6);
    expect(result.ratio).toBeGreaterThan(0);
    expect(result.ratio).toBeLessThan(1);
  });

  it.each([
    [1, 1],
    [2, 2],
    [6, 6],
    [50, 6],
  ])('max_sentences %d returns %d sentences', (max, count) => {
    const result = summarizeText(ARTICLE, max);
    expect(result.sentences).toHaveLength(count);
    const positions = result.sentences.map((s) => ARTICLE.indexOf(s));
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
  });

  it('returns the whole text with ratio 1 when it has fewer sentences than asked for', () => {
    const result = summarizeText('Only one sentence here.', 3);
    expect(result).toEqual({
      summary: 'Only one sentence here.',
      sentences: ['Only one sentence here.'],
      sentence_count: 1,
      ratio: 1,
    });
  });

  it('gives the first sentence a boost that breaks a tie', () => {
    const result = summarizeText('Cats like milk. Cats like milk. Cats like milk.', 1);
    expect(result.sentences).toEqual(['Cats like milk.']);
    expect(result.sentence_count).toBe(3);
  });

  it.each([[''], ['   '], ['\n\n\t']])('empty text %j gives an empty summary', (text) => {
    expect(summarizeText(text)).toEqual({ summary: '', sentences: [], sentence_count: 0, ratio: 0 });
  });

  it('is deterministic', () => {
    expect(summarizeText(ARTICLE, 2)).toEqual(summarizeText(ARTICLE, 2));
  });

  it.each<[string, string[]]>([
    ['The pump and the station', ['pump', 'station']],
    ["It's what they've done with 42 pumps", ['done', 'pumps']],
    ['Über-fast Café', ['über', 'fast', 'café']],
  ])('contentWords(%j)', (sentence, expected) => {
    expect(contentWords(sentence)).toEqual(expected);
  });

  it('has an English stopword list', () => {
    for (const w of ['the', 'and', 'of', 'is', 'was', 'they', "don't"]) expect(STOPWORDS.has(w)).toBe(true);
    expect(STOPWORDS.has('pump')).toBe(false);
  });
});

describe('summarize - tool', () => {
  it('defaults max_sentences to 3', async () => {
    const out = await summarizeTool.run({ text: ARTICLE }, ctx);
    expect(out.sentences).toHaveLength(3);
  });

  it.each([[0], [51], [1.5]])('rejects max_sentences %d when called directly', (max_sentences) => {
    try {
      summarizeTool.run({ text: ARTICLE, max_sentences }, ctx);
      expect.unreachable();
    } catch (err) {
      expect(isFieldmeshError(err) && err.code).toBe('FM_ERR_INVALID_ARGS');
    }
  });

  it.each([[{ text: ARTICLE }], [{ text: '', max_sentences: 1 }], [{ text: 'x', max_sentences: 50 }]])(
    'input schema accepts %j',
    (input) => {
      expect(validateInput(input)).toBe(true);
    },
  );

  it.each([
    [{}],
    [{ text: 1 }],
    [{ text: 'x', max_sentences: 0 }],
    [{ text: 'x', max_sentences: 51 }],
    [{ text: 'x', max_sentences: 2.5 }],
    [{ text: 'x', max_sentences: '3' }],
    [{ text: 'x', language: 'en' }],
  ])('input schema rejects %j', (input) => {
    expect(validateInput(input)).toBe(false);
  });

  it.each([[ARTICLE], [''], ['One. Two. Three. Four.']])('output for %j matches the output schema', async (text) => {
    const out = await summarizeTool.run({ text, max_sentences: 2 }, ctx);
    expect(validateOutput(out), JSON.stringify(validateOutput.errors)).toBe(true);
  });

  it('output schema rejects a ratio above 1 and missing fields', () => {
    expect(validateOutput({ summary: '', sentences: [], sentence_count: 0, ratio: 1.5 })).toBe(false);
    expect(validateOutput({ summary: '' })).toBe(false);
  });
});
