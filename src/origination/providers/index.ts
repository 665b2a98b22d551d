/**
 * The origination pipeline's external providers: company verification (Serper) and the
 * underwriters' narrative (Gemini). The composition root calls the two factories; each
 * answers 'skipped' when its API key is not configured.
 */
export { createCompanyVerifier, createSerperVerifier, normaliseCompanyName, SERPER_CACHE_TTL_MS } from './serper.js';
export type { ProviderHttpTuning, SerperVerifierOptions } from './serper.js';
export { buildNarrativePrompt, createGeminiNarrator, createNarrativeWriter, MAX_NARRATIVE_CHARS } from './gemini.js';
export type { GeminiNarratorOptions } from './gemini.js';
export { createProviderHttpClient, MAX_PROVIDER_TIMEOUT_MS } from './http.js';
export type { CircuitState, ProviderHttpClient, ProviderHttpOptions, ProviderResponse } from './http.js';
