/**
 * Company verification through Serper (Google search results as JSON, serper.dev):
 * `POST {baseUrl}/search` with `X-API-KEY` and `{"q": "<company> company"}`.
 *
 * The rule (deliberately simple, and recorded with its evidence for the underwriter):
 * the employer is 'verified' when the knowledge-graph title, or the title of one of the
 * top three organic results, contains the normalised company name as whole words in
 * order, or when one of those results is served from a host whose name is the company
 * name run together ("Acme Widgets" → acmewidgets.com). Anything else is 'not_found'.
 * Normalising: Unicode compatibility form without accents, lower case, "&" read as
 * "and", dots and apostrophes dropped ("L.L.C." = "llc", "McDonald's" = "mcdonalds"),
 * any other punctuation a word break, a leading "the" and trailing legal forms (Inc,
 * Ltd, GmbH, …) removed.
 *
 * Answers are cached for 10 minutes (the seed's `@cache_result(expire=600)`) under the
 * normalised name; failures never are, so the next application asks again. A response
 * of an unexpected shape is 'malformed', never guessed at.
 */
import { z } from 'zod';
import type { Config } from '../../platform/config.js';
import type { TtlCache } from '../../platform/cache.js';
import type { CompanyVerification, CompanyVerifier } from '../model.js';
import { createProviderHttpClient, type ProviderHttpOptions } from './http.js';

export const SERPER_CACHE_TTL_MS = 600_000;
const CACHE_PREFIX = 'serper:v1:';
const TOP_RESULTS = 3;
const MAX_EVIDENCE = 3;
const MAX_TITLE_CHARS = 200;
/** Longer names are cut before searching; no employer needs more. */
const MAX_QUERY_NAME_CHARS = 200;

/** What a caller may tune on the HTTP client (tests: sleep, clock, breaker). */
export type ProviderHttpTuning = Omit<ProviderHttpOptions, 'name' | 'timeoutMs' | 'secrets'>;

export interface SerperVerifierOptions {
  readonly apiKey: string;
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly cache: TtlCache;
  readonly cacheTtlMs?: number;
  readonly http?: ProviderHttpTuning;
}

type Evidence = { readonly title: string; readonly link: string };
type Finding = { readonly status: 'verified' | 'not_found'; readonly evidence: readonly Evidence[] };

const httpUrl = z.string().max(2048).regex(/^https?:\/\//i);

/** The fields we read; Serper sends many more (sitelinks, peopleAlsoAsk, …), which are ignored. */
const serperResponseSchema = z.object({
  organic: z.array(
    z.object({
      title: z.string(),
      link: httpUrl,
      snippet: z.string().optional(),
      position: z.number().int().positive().optional(),
    }),
  ),
  knowledgeGraph: z
    .object({
      title: z.string(),
      type: z.string().optional(),
      website: httpUrl.optional(),
      description: z.string().optional(),
    })
    .optional(),
});
type SerperResponse = z.infer<typeof serperResponseSchema>;

const findingSchema = z.object({
  status: z.enum(['verified', 'not_found']),
  evidence: z.array(z.object({ title: z.string(), link: z.string() })).max(MAX_EVIDENCE),
});

export function createSerperVerifier(options: SerperVerifierOptions): CompanyVerifier {
  const http = createProviderHttpClient({ ...options.http, name: 'serper', timeoutMs: options.timeoutMs, secrets: [options.apiKey] });
  const url = `${options.baseUrl.replace(/\/+$/, '')}/search`;
  const ttlMs = options.cacheTtlMs ?? SERPER_CACHE_TTL_MS;
  return {
    async verify(company) {
      const name = company.trim().slice(0, MAX_QUERY_NAME_CHARS);
      const tokens = companyNameTokens(name);
      if (tokens.length === 0) return { status: 'skipped', reason: 'no_company' };
      const cacheKey = CACHE_PREFIX + tokens.join(' ');

      const cached = await readCached(options.cache, cacheKey);
      if (cached !== undefined) return { ...cached, provider: 'serper', cached: true };

      const response = await http.postJson(url, { q: `${name} company` }, { 'x-api-key': options.apiKey });
      if (!response.ok) return { status: 'unavailable', provider: 'serper', failure: response.failure, detail: response.detail };
      const parsed = serperResponseSchema.safeParse(response.body);
      if (!parsed.success) {
        const where = parsed.error.issues[0]?.path.join('.') ?? '';
        return { status: 'unavailable', provider: 'serper', failure: 'malformed', detail: `serper: unexpected response shape${where === '' ? '' : ` at ${where}`}` };
      }
      const finding = judge(tokens, parsed.data);
      await writeCached(options.cache, cacheKey, finding, ttlMs);
      return { ...finding, provider: 'serper', cached: false };
    },
  };
}

/** Without SERPER_API_KEY the stage is skipped (recorded as such), never failed. */
export function createCompanyVerifier(config: Config, cache: TtlCache, http?: ProviderHttpTuning): CompanyVerifier {
  const apiKey = config.serperApiKey;
  if (apiKey === undefined) {
    return {
      async verify(company): Promise<CompanyVerification> {
        return company.trim() === '' ? { status: 'skipped', reason: 'no_company' } : { status: 'skipped', reason: 'not_configured' };
      },
    };
  }
  return createSerperVerifier({ apiKey, baseUrl: config.providers.serperUrl, timeoutMs: config.providers.timeoutMs, cache, ...(http ? { http } : {}) });
}

// ---- the rule ------------------------------------------------------------------------

const LEGAL_FORMS = new Set([
  'inc', 'incorporated', 'corp', 'corporation', 'co', 'company', 'llc', 'llp', 'lp', 'ltd', 'limited', 'plc',
  'gmbh', 'ag', 'kg', 'sa', 'sas', 'sarl', 'srl', 'spa', 'bv', 'nv', 'oy', 'ab', 'as', 'pty', 'pte', 'kk',
]);

/** Words of a text after normalising (accents, case, "&", dots, apostrophes, punctuation). */
function words(text: string): string[] {
  return text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(/&/g, ' and ')
    .replace(/['’.]/g, '')
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w !== '');
}

/**
 * The company name as the words it is matched and cached by: a leading "the" and trailing
 * legal forms removed, unless nothing else would remain ("The Company" stays as it is).
 */
export function companyNameTokens(name: string): string[] {
  const all = words(name);
  let start = 0;
  let end = all.length;
  if (all[0] === 'the') start = 1;
  while (end > start && LEGAL_FORMS.has(all[end - 1] ?? '')) end--;
  return end > start ? all.slice(start, end) : all;
}

export function normaliseCompanyName(name: string): string {
  return companyNameTokens(name).join(' ');
}

function containsInOrder(haystack: readonly string[], needle: readonly string[]): boolean {
  for (let i = 0; i + needle.length <= haystack.length; i++) {
    if (needle.every((w, j) => haystack[i + j] === w)) return true;
  }
  return false;
}

/** acme-widgets.com, www.acmewidgets.co.uk → a label equal to the name run together (≥ 3 characters). */
function hostNamesCompany(link: string, joined: string): boolean {
  if (joined.length < 3) return false;
  let host: string;
  try {
    host = new URL(link).hostname.toLowerCase();
  } catch {
    return false;
  }
  return host.split('.').some((label) => label.replace(/-/g, '') === joined);
}

function namesCompany(tokens: readonly string[], title: string, link: string | undefined): boolean {
  return containsInOrder(words(title), tokens) || (link !== undefined && hostNamesCompany(link, tokens.join('')));
}

const evidenceOf = (title: string, link: string): Evidence => ({ title: title.slice(0, MAX_TITLE_CHARS), link });

/** Verified: the matching results (knowledge graph first). Not found: the top results that were seen instead. */
function judge(tokens: readonly string[], response: SerperResponse): Finding {
  const top = [...response.organic].sort((a, b) => (a.position ?? Infinity) - (b.position ?? Infinity)).slice(0, TOP_RESULTS);
  const kg = response.knowledgeGraph;
  const kgMatches = kg !== undefined && namesCompany(tokens, kg.title, kg.website);
  const matching = top.filter((r) => namesCompany(tokens, r.title, r.link));
  if (!kgMatches && matching.length === 0) {
    return { status: 'not_found', evidence: top.map((r) => evidenceOf(r.title, r.link)) };
  }
  const evidence = [
    ...(kgMatches && kg.website !== undefined ? [evidenceOf(kg.title, kg.website)] : []),
    ...matching.map((r) => evidenceOf(r.title, r.link)),
  ];
  return { status: 'verified', evidence: evidence.slice(0, MAX_EVIDENCE) };
}

// ---- cache ---------------------------------------------------------------------------

/** A cache that fails or holds something unreadable is a miss: it never decides anything. */
async function readCached(cache: TtlCache, key: string): Promise<Finding | undefined> {
  try {
    const raw = await cache.get(key);
    if (raw === undefined) return undefined;
    const parsed = findingSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

async function writeCached(cache: TtlCache, key: string, finding: Finding, ttlMs: number): Promise<void> {
  try {
    await cache.set(key, JSON.stringify({ status: finding.status, evidence: finding.evidence }), ttlMs);
  } catch {
    // Not cached this time; the answer stands.
  }
}
