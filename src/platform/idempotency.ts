/**
 * Idempotency-Key for POST routes (draft-ietf-httpapi-idempotency-key-header):
 * keyed per caller, the request's hash stored with its response.
 *  - same key, same request, finished  → the stored response, `Idempotent-Replayed: true`
 *  - same key, different request       → 422 idempotency_key_reused
 *  - same key while the first is running → 409 idempotency_key_in_use, Retry-After
 * A claim is one atomic INSERT … ON CONFLICT, so truly concurrent duplicates cannot both
 * run. A 5xx releases the claim so the client may retry. A claim not finished within
 * `claimTimeoutMs` counts as abandoned and the same request may take it over; the
 * abandoned request can then no longer store or release the key (its claim is
 * identified by its created_at). Keys are kept for
 * IDEMPOTENCY_RETENTION_HOURS (24 by default), then purged.
 *
 * This layer makes retries safe for clients. Money-moving services additionally keep
 * the key on their own rows under a unique constraint, so even a crash between their
 * commit and the response being stored here cannot post twice.
 */
import { sql, type Kysely } from 'kysely';
import { canonicalJson } from './canonical-json.js';
import { sha256Hex } from './crypto.js';
import { isDatabaseUnavailable } from './database.js';
import { AppError, coerceError } from './errors.js';
import type { App } from './http.js';
import { platformView, type PlatformTables } from './schema.js';

const KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;
/** Response headers worth replaying; the rest are per-response. */
const REPLAYED_HEADERS = ['content-type', 'location'];

export interface IdempotencyOptions {
  readonly retentionHours: number;
  /** How long an in-flight claim is honoured before it counts as abandoned (a crashed process). */
  readonly claimTimeoutMs: number;
}

interface Claim {
  readonly scope: string;
  readonly key: string;
  /**
   * The claim's created_at as Postgres prints it (microseconds; a JS Date would round).
   * A request whose claim was taken over after it timed out must not store or release
   * the key of the request that took it over.
   */
  readonly claimedAt: string;
}

const claims = new WeakMap<object, Claim>();

export function installIdempotency<DB extends PlatformTables>(app: App, appDb: Kysely<DB>, options: IdempotencyOptions): void {
  const db = platformView(appDb);
  app.addHook('preHandler', async (request, reply) => {
    const mode = request.routeOptions.config.idempotency;
    if (mode === undefined) return;
    const header = request.headers['idempotency-key'];
    if (header === undefined) {
      if (mode === 'required') throw new AppError('idempotency_key_missing');
      return;
    }
    if (typeof header !== 'string' || !KEY_PATTERN.test(header)) throw new AppError('idempotency_key_invalid');

    const scope = request.principal ? `user:${request.principal.userId}` : `anon:${request.ip}`;
    const route = request.routeOptions.url ?? request.url;
    const requestHash = sha256Hex(
      canonicalJson({ method: request.method, route, params: request.params, query: request.query, body: request.body }),
    );
    const claimed = await sql<{ claimed_at: string }>`
      insert into idempotency_keys (scope, key, method, route, request_hash, state, locked_until, expires_at)
      values (${scope}, ${header}, ${request.method}, ${route}, ${requestHash}, 'in_flight',
              now() + make_interval(secs => ${options.claimTimeoutMs / 1000}),
              now() + make_interval(hours => ${options.retentionHours}))
      on conflict (scope, key) do update set
        method = excluded.method, route = excluded.route, request_hash = excluded.request_hash,
        state = 'in_flight', locked_until = excluded.locked_until, response_status = null,
        response_headers = null, response_body = null, created_at = now(), expires_at = excluded.expires_at
      where idempotency_keys.expires_at < now()
         or (idempotency_keys.state = 'in_flight' and idempotency_keys.locked_until < now()
             and idempotency_keys.request_hash = excluded.request_hash)
      returning created_at::text as claimed_at
    `.execute(db);
    const claim = claimed.rows[0];
    if (claim) {
      claims.set(request, { scope, key: header, claimedAt: claim.claimed_at });
      return;
    }

    const existing = await db
      .selectFrom('idempotency_keys')
      .select(['request_hash', 'state', 'locked_until', 'response_status', 'response_headers', 'response_body'])
      .where('scope', '=', scope)
      .where('key', '=', header)
      .executeTakeFirst();
    if (!existing) {
      // Purged between the two statements: the client may simply retry.
      throw new AppError('idempotency_key_in_use', { headers: { 'retry-after': '1' } });
    }
    if (existing.request_hash !== requestHash) {
      throw new AppError('idempotency_key_reused', {
        detail: 'This Idempotency-Key was used for a different request; send a new key.',
      });
    }
    if (existing.state === 'in_flight' || existing.response_status === null) {
      const waitS = Math.max(1, Math.ceil((existing.locked_until.getTime() - Date.now()) / 1000));
      throw new AppError('idempotency_key_in_use', { headers: { 'retry-after': String(Math.min(waitS, 5)) } });
    }
    for (const [k, v] of Object.entries(existing.response_headers ?? {})) void reply.header(k, v);
    return reply
      .code(existing.response_status)
      .header('idempotent-replayed', 'true')
      .serializer((p: unknown) => p as string)
      .send(existing.response_body ?? '');
  });

  const release = (claim: Claim) =>
    db
      .deleteFrom('idempotency_keys')
      .where('scope', '=', claim.scope)
      .where('key', '=', claim.key)
      .where('created_at', '=', sql<Date>`${claim.claimedAt}::timestamptz`)
      .execute();

  app.addHook('onSend', async (request, reply, payload) => {
    const claim = claims.get(request);
    if (!claim) return payload;
    claims.delete(request);
    if (reply.statusCode >= 500) {
      // A failed release (the database went away) leaves the claim to its lease: a retry
      // before then gets 409 with Retry-After, after it the request runs again.
      const releasing = release(claim).catch((e: unknown) =>
        request.log.warn({ err: coerceError(e) }, 'idempotency key not released; it frees when its lease ends'),
      );
      // database_unavailable (down, unreachable, pool exhausted) is answered at once: the
      // release would wait for the same database, and the client is told to retry later anyway.
      const databaseUnavailable = reply.statusCode === 503 && typeof payload === 'string' && payload.includes('"code":"database_unavailable"');
      if (!databaseUnavailable) await releasing;
      return payload;
    }
    const body = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : null;
    if (body === null) {
      // A streamed response cannot be replayed; release the key rather than store half of it.
      await release(claim);
      return payload;
    }
    const headers: Record<string, string> = {};
    for (const h of REPLAYED_HEADERS) {
      const v = reply.getHeader(h);
      if (typeof v === 'string') headers[h] = v;
    }
    try {
      await db
        .updateTable('idempotency_keys')
        .set({
          state: 'completed',
          response_status: reply.statusCode,
          response_headers: JSON.stringify(headers),
          response_body: body,
        })
        .where('scope', '=', claim.scope)
        .where('key', '=', claim.key)
        .where('created_at', '=', sql<Date>`${claim.claimedAt}::timestamptz`)
        .execute();
    } catch (e) {
      // The response cannot be stored, so it is not acknowledged: the client retries with the
      // same key once the claim's lease ends (money-moving services dedupe on their own rows).
      // Answered here, not thrown: for an error response Fastify would not run our error
      // handler again and would send the raw error instead.
      const unavailable = isDatabaseUnavailable(e);
      request.log[unavailable ? 'warn' : 'error']({ err: coerceError(e) }, 'idempotency key response not stored');
      const problem = new AppError(unavailable ? 'database_unavailable' : 'internal_error', unavailable ? { headers: { 'retry-after': '2' } } : {});
      for (const [k, v] of Object.entries(problem.headers)) void reply.header(k, v);
      void reply.code(problem.status).header('content-type', 'application/problem+json').removeHeader('location');
      return JSON.stringify(problem.toProblem(request.url.split('?')[0], request.id));
    }
    return payload;
  });
}

/** Deletes keys past retention, in batches; returns how many were removed. */
export async function purgeExpiredIdempotencyKeys<DB extends PlatformTables>(db: Kysely<DB>, batch = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await sql`
      delete from idempotency_keys where ctid in (
        select ctid from idempotency_keys where expires_at < now() limit ${batch}
      )`.execute(db);
    const n = Number(r.numAffectedRows ?? 0n);
    total += n;
    if (n < batch) return total;
  }
}
