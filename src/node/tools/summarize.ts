// The summarize built-in tool: a deterministic extractive summary that picks the sentences with the most frequent content words.
import { FieldmeshError } from '../../core/errors.js';
import type { ToolDefinition } from './types.js';

export interface SummarizeArgs {
  text: string;
  max_sentences?: number;
}

export interface SummarizeResult {
  summary: string;
  sentences: string[];
  sentence_count: number;
  ratio: number;
}

export const DEFAULT_MAX_SENTENCES = 3;
export const MAX_SENTENCES_LIMIT = 50;

/** Common English function words; they carry no topic, so they do not count towards a sentence's score. */
export const STOPWORDS: ReadonlySet<string> = new Set(
  (
    "a about above after again against all also am an and any are aren't as at be because been before being below between both but by " +
    "can can't cannot could couldn't did didn't do does doesn't doing don't down during each either else ever every few for from further " +
    "had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how how's however i i'd " +
    "i'll i'm i've if in into is isn't it it's its itself just let's like may me might more most much must mustn't my myself neither " +
    "no nor not now of off on once one only or other ought our ours ourselves out over own per quite rather same shall shan't she " +
    "she'd she'll she's should shouldn't since so some such than that that's the their theirs them themselves then there there's these " +
    "they they'd they'll they're they've this those though through thus to too under until up upon us very via was wasn't we we'd " +
    "we'll we're we've were weren't what what's when when's where where's whether which while who who's whom whose why why's will " +
    "with within without won't would wouldn't yet you you'd you'll you're you've your yours yourself yourselves"
  ).split(' '),
);

/** Abbreviations that are followed by a name or number, so their period never ends a sentence ("Dr. Smith", "e.g. Paris"). */
const NEVER_FINAL = new Set('mr mrs ms dr prof gen col capt lt sgt rev hon fig figs vol pp e.g i.e cf viz vs approx ca'.split(' '));

/** Abbreviations that often end a sentence too ("... and so on, etc. The next"), decided by the word that follows. */
const MAYBE_FINAL = new Set(
  'etc inc ltd co corp jr sr st mt no al dept est a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec'.split(' '),
);

const FIRST_SENTENCE_BOOST = 1.2;

// A terminator is a run of . ! ? or an ellipsis, with any closing quotes or brackets, followed by whitespace or the end.
// The lookbehind starts matches only at the start of a punctuation run, so a long run is not rescanned from every offset.
const TERMINATOR = /(?<![.!?…])(?:\.{2,}|…|[.!?]+)['"”’)\]]*(?=\s|$)/g;

function firstWordAfter(text: string, index: number): string {
  const m = /^\s*["'“‘([]*([\p{L}\p{N}][\p{L}\p{N}'’-]*)?/u.exec(text.slice(index, index + 80));
  return m?.[1] ?? '';
}

function isBoundary(text: string, termStart: number, termEnd: number): boolean {
  const terminator = text.slice(termStart, termEnd);
  if (/[!?]/.test(terminator)) return true;
  const next = firstWordAfter(text, termEnd);
  if (next === '') return true;
  // A lower-case continuation means the period belonged to an abbreviation or an ellipsis inside the sentence.
  if (/^\p{Ll}/u.test(next)) return false;
  if (terminator.startsWith('..') || terminator.startsWith('…')) return true;

  const before = text.slice(Math.max(0, termStart - 40), termStart);
  const token = (/[^\s"'“‘([]*$/.exec(before)?.[0] ?? '').toLowerCase();
  if (NEVER_FINAL.has(token)) return false;
  const initialism = /^(?:\p{L}\.)*\p{L}$/u.test(token) && (token.length === 1 || token.includes('.'));
  if (MAYBE_FINAL.has(token) || initialism) {
    // "the U.S. Army" continues, "moved to the U.S. He liked it" does not: a following function word starts a new sentence.
    return STOPWORDS.has(next.toLowerCase());
  }
  return true;
}

/** Splits text into sentences, with whitespace collapsed; handles abbreviations, initialisms, decimals and ellipses. */
export function splitSentences(text: string): string[] {
  const sentences: string[] = [];
  // A blank line ends a sentence even without punctuation, so headings and list items stay separate.
  for (const paragraph of text.split(/\n\s*\n/)) {
    let start = 0;
    for (const m of paragraph.matchAll(TERMINATOR)) {
      const end = m.index + m[0].length;
      if (!isBoundary(paragraph, m.index, end)) continue;
      pushSentence(sentences, paragraph.slice(start, end));
      start = end;
    }
    pushSentence(sentences, paragraph.slice(start));
  }
  return sentences;
}

function pushSentence(out: string[], raw: string): void {
  const sentence = raw.replace(/\s+/g, ' ').trim();
  if (sentence !== '') out.push(sentence);
}

/** Lower-cased content words of a sentence: letters and digits, stopwords and one-letter tokens removed. */
export function contentWords(sentence: string): string[] {
  const words = sentence.toLowerCase().match(/[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu) ?? [];
  return words.map((w) => w.replace(/’/g, "'")).filter((w) => w.length > 1 && !STOPWORDS.has(w) && !/^\d+$/.test(w));
}

/** Scores each sentence by the normalised frequency of its content words; a pure function of the sentences. */
export function scoreSentences(sentences: readonly string[]): number[] {
  const words = sentences.map(contentWords);
  const freq = new Map<string, number>();
  for (const list of words) for (const w of list) freq.set(w, (freq.get(w) ?? 0) + 1);
  let maxFreq = 1;
  for (const n of freq.values()) if (n > maxFreq) maxFreq = n;
  return words.map((list, i) => {
    if (list.length === 0) return 0;
    const sum = list.reduce((acc, w) => acc + (freq.get(w) ?? 0) / maxFreq, 0);
    // Dividing by the square root of the length balances long sentences that collect many words against short ones.
    const score = sum / Math.sqrt(list.length);
    return i === 0 ? score * FIRST_SENTENCE_BOOST : score;
  });
}

/** Picks the `maxSentences` best sentences and returns them in their original order. */
export function summarizeText(text: string, maxSentences = DEFAULT_MAX_SENTENCES): SummarizeResult {
  const all = splitSentences(text);
  if (all.length === 0) return { summary: '', sentences: [], sentence_count: 0, ratio: 0 };
  const scores = scoreSentences(all);
  const chosen = all
    .map((_, i) => i)
    .sort((a, b) => scores[b]! - scores[a]! || a - b)
    .slice(0, maxSentences)
    .sort((a, b) => a - b);
  const sentences = chosen.map((i) => all[i]!);
  const summary = sentences.join(' ');
  const inputLength = all.join(' ').length;
  return { summary, sentences, sentence_count: all.length, ratio: Math.round((summary.length / inputLength) * 10_000) / 10_000 };
}

export const summarizeTool: ToolDefinition<SummarizeArgs, SummarizeResult> = {
  name: 'summarize',
  description:
    'Extractive summary without a model: scores sentences by the frequency of their content words (English stopwords removed) ' +
    'and returns the best ones in their original order. Deterministic.',
  input_schema: {
    type: 'object',
    properties: {
      text: { type: 'string', description: 'Text to summarise; empty text gives an empty summary.' },
      max_sentences: {
        type: 'integer',
        minimum: 1,
        maximum: MAX_SENTENCES_LIMIT,
        default: DEFAULT_MAX_SENTENCES,
        description: 'Most sentences to keep.',
      },
    },
    required: ['text'],
    additionalProperties: false,
  },
  output_schema: {
    type: 'object',
    properties: {
      summary: { type: 'string', description: 'The chosen sentences joined by spaces.' },
      sentences: { type: 'array', items: { type: 'string' }, description: 'The chosen sentences in their original order.' },
      sentence_count: { type: 'integer', minimum: 0, description: 'Number of sentences in the input.' },
      ratio: {
        type: 'number',
        minimum: 0,
        maximum: 1,
        description: 'Summary length over input length in characters (whitespace collapsed), rounded to 4 decimals.',
      },
    },
    required: ['summary', 'sentences', 'sentence_count', 'ratio'],
    additionalProperties: false,
  },
  run(args) {
    if (typeof args?.text !== 'string') throw new FieldmeshError('FM_ERR_INVALID_ARGS', 'summarize: "text" must be a string');
    const max = args.max_sentences ?? DEFAULT_MAX_SENTENCES;
    if (!Number.isInteger(max) || max < 1 || max > MAX_SENTENCES_LIMIT) {
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', `summarize: "max_sentences" must be an integer from 1 to ${MAX_SENTENCES_LIMIT}`, {
        details: { max_sentences: max },
      });
    }
    return summarizeText(args.text, max);
  },
};
