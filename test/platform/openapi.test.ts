/**
 * The OpenAPI 3.1 document is generated from the same zod schemas that validate, and
 * its x-roles are the roles the server actually enforces.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES } from '../../src/identity/model.js';
import { allProblems } from '../../src/platform/errors.js';
import { bearer, createTestApp, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';

interface Operation {
  'x-roles'?: unknown;
  'x-idempotency'?: string;
  security?: unknown;
  summary?: string;
  requestBody?: { required?: boolean; content: Record<string, { schema: Record<string, unknown> }> };
  parameters?: { in: string; name: string; required?: boolean; schema: Record<string, unknown> }[];
  responses: Record<string, { description: string; content?: Record<string, { schema: Record<string, unknown> }> }>;
}

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>>; securitySchemes: Record<string, unknown> };
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
const packageVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function operations(doc: OpenApiDocument): { method: string; path: string; op: Operation }[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, op]) => ({ method, path, op })),
  );
}

function collectRefs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) collectRefs(v, out);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else collectRefs(v, out);
    }
  }
  return out;
}

/** A concrete URL for a templated path: every {param} becomes a fresh UUID. */
function concrete(path: string): string {
  return path.replace(/\{[^}]+\}/g, () => randomUUID());
}

describe(`OpenAPI document (${dbTarget})`, () => {
  let t: TestApp;
  let doc: OpenApiDocument;

  beforeAll(async () => {
    t = await createTestApp();
    const res = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    doc = res.json<OpenApiDocument>();
  });
  afterAll(async () => t?.close());

  it('is OpenAPI 3.1.0 for this package version, served without a token', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.title).toBe('Loanbook API');
    expect(doc.info.version).toBe(packageVersion);
    expect(doc.components.securitySchemes).toEqual({ bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } });
  });

  it('documents the identity operations', () => {
    const listed = operations(doc)
      .filter((o) => o.path.startsWith('/v1/'))
      .map((o) => `${o.method.toUpperCase()} ${o.path}`)
      .sort();
    expect(listed).toEqual(
      expect.arrayContaining([
        'POST /v1/auth/token',
        'POST /v1/auth/refresh',
        'POST /v1/auth/logout',
        'GET /v1/me',
        'GET /v1/users',
        'POST /v1/users',
        'GET /v1/users/{id}',
        'PATCH /v1/users/{id}',
        'DELETE /v1/users/{id}',
      ]),
    );
  });

  it('gives every operation an x-roles array of known roles, and security that matches it', () => {
    const ops = operations(doc);
    expect(ops.length).toBeGreaterThanOrEqual(9);
    for (const { method, path, op } of ops) {
      const where = `${method} ${path}`;
      expect(Array.isArray(op['x-roles']), where).toBe(true);
      const roles = op['x-roles'] as string[];
      for (const r of roles) expect(ROLES, where).toContain(r);
      expect(op.security, where).toEqual(roles.length === 0 ? [] : [{ bearer: [] }]);
    }
  });

  it('marks the public operations with x-roles []', () => {
    expect(doc.paths['/v1/auth/token']?.post?.['x-roles']).toEqual([]);
    expect(doc.paths['/v1/auth/refresh']?.post?.['x-roles']).toEqual([]);
    expect(doc.paths['/health/live']?.get?.['x-roles']).toEqual([]);
  });

  it('marks admin-only operations with ["admin"] and signed-in ones with every role', () => {
    for (const [path, method] of [
      ['/v1/users', 'get'],
      ['/v1/users', 'post'],
      ['/v1/users/{id}', 'get'],
      ['/v1/users/{id}', 'patch'],
      ['/v1/users/{id}', 'delete'],
    ] as const) {
      expect(doc.paths[path]?.[method]?.['x-roles'], `${method} ${path}`).toEqual(['admin']);
    }
    expect(doc.paths['/v1/me']?.get?.['x-roles']).toEqual([...ROLES]);
  });

  it('marks idempotent operations with x-idempotency', () => {
    expect(doc.paths['/v1/users']?.post?.['x-idempotency']).toBe('optional');
    expect(doc.paths['/v1/auth/token']?.post?.['x-idempotency']).toBeUndefined();
  });

  it('derives request schemas from the zod schemas (strict objects, formats, bounds)', () => {
    const body = doc.paths['/v1/auth/token']?.post?.requestBody;
    expect(body?.required).toBe(true);
    const schema = body?.content['application/json']?.schema;
    expect(schema?.type).toBe('object');
    expect(schema?.additionalProperties).toBe(false);
    expect(schema?.required).toEqual(['email', 'password']);
    expect(schema?.properties).toMatchObject({
      email: { type: 'string', format: 'email', maxLength: 254 },
      password: { type: 'string', minLength: 1, maxLength: 256 },
    });

    const params = doc.paths['/v1/users']?.get?.parameters ?? [];
    expect(params.find((p) => p.name === 'limit')).toMatchObject({
      in: 'query',
      required: false,
      schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
    });
    expect(doc.paths['/v1/users/{id}']?.get?.parameters?.find((p) => p.name === 'id')).toMatchObject({
      in: 'path',
      required: true,
      schema: { type: 'string', format: 'uuid' },
    });
  });

  it('resolves every $ref to a component (named zod schemas are published)', () => {
    const refs = [...new Set(collectRefs(doc.paths))];
    expect(refs).toEqual(expect.arrayContaining(['#/components/schemas/User', '#/components/schemas/Problem']));
    for (const ref of refs) {
      const name = /^#\/components\/schemas\/(.+)$/.exec(ref)?.[1];
      expect(name, ref).toBeDefined();
      expect(doc.components.schemas[name ?? ''], ref).toBeDefined();
    }
    expect(doc.components.schemas.User).toMatchObject({
      type: 'object',
      properties: { id: { type: 'string', format: 'uuid' }, email: { type: 'string' } },
    });
  });

  it('documents the problem+json error response on every operation', () => {
    for (const { method, path, op } of operations(doc)) {
      expect(op.responses.default?.content?.['application/problem+json']?.schema, `${method} ${path}`).toEqual({
        $ref: '#/components/schemas/Problem',
      });
    }
    const problem = doc.components.schemas.Problem as { required: string[]; properties: { code: { enum: string[] } } };
    expect(problem.required).toEqual(['type', 'title', 'status', 'detail', 'code']);
    expect(problem.properties.code.enum).toEqual([...allProblems().keys()]);
    expect(problem.properties.code.enum).toEqual(expect.arrayContaining(['validation_failed', 'internal_error', 'invalid_credentials']));
  });

  it('hides the documentation plumbing and the CORS preflight route', () => {
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/docs') || p === '/openapi.json' || p === '*' || p.startsWith('/problems'))).toEqual([]);
  });

  it('x-roles is what the server enforces: no token is a 401 exactly where roles are listed', async () => {
    for (const { method, path, op } of operations(doc).filter((o) => o.path.startsWith('/v1/'))) {
      const res = await t.app.inject({
        method: method.toUpperCase(),
        url: concrete(path),
        ...(method === 'get' || method === 'delete' ? {} : { payload: {} }),
      });
      const where = `${method} ${path}`;
      if ((op['x-roles'] as string[]).length > 0) {
        expect(res.statusCode, where).toBe(401);
        expect(res.json<{ code: string }>().code, where).toBe('unauthenticated');
      } else {
        expect(res.statusCode, where).not.toBe(401);
      }
    }
  });

  it('x-roles is what the server enforces: a role not listed gets 403, a listed one gets past the check', async () => {
    const borrower = await t.userWithRole('borrower');
    // Logout last: it ends the borrower's session.
    const ops = operations(doc)
      .filter((o) => o.path.startsWith('/v1/') && (o.op['x-roles'] as string[]).length > 0)
      .sort((a, b) => Number(a.path === '/v1/auth/logout') - Number(b.path === '/v1/auth/logout'));
    for (const { method, path, op } of ops) {
      const res = await t.app.inject({
        method: method.toUpperCase(),
        url: concrete(path),
        headers: bearer(borrower.token),
        ...(method === 'get' || method === 'delete' ? {} : { payload: {} }),
      });
      const where = `${method} ${path} → ${res.statusCode}`;
      if ((op['x-roles'] as string[]).includes('borrower')) {
        expect([401, 403], where).not.toContain(res.statusCode);
      } else {
        expect(res.statusCode, where).toBe(403);
        expect(res.json<{ code: string; detail: string }>(), where).toMatchObject({
          code: 'forbidden',
          detail: `This operation is for ${(op['x-roles'] as string[]).join(', ')}; your role is borrower.`,
        });
      }
    }
  });

  it('serves Swagger UI at /docs as HTML, without a token', async () => {
    for (const url of ['/docs', '/docs/']) {
      const res = await t.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(200);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.body).toContain('<title>Swagger UI</title>');
      expect(res.headers['x-frame-options']).toBe('DENY');
    }
    const json = await t.app.inject({ method: 'GET', url: '/docs/json' });
    expect(json.statusCode).toBe(200);
    expect(json.json<OpenApiDocument>().openapi).toBe('3.1.0');
  });
});
