/**
 * The OpenAPI 3.1 document, generated from the same zod schemas that validate, with
 * each operation's roles (`x-roles`) and idempotency requirement (`x-idempotency`);
 * Swagger UI at /docs; the problem catalogue at /problems/{code}.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, allProblems, problemDefinition } from './errors.js';
import type { App, HttpOptions } from './http.js';

export async function installOpenApi(app: App, info: HttpOptions['openapi']): Promise<void> {
  const problemSchema = {
    type: 'object',
    required: ['type', 'title', 'status', 'detail', 'code'],
    properties: {
      type: { type: 'string' },
      title: { type: 'string' },
      status: { type: 'integer' },
      detail: { type: 'string' },
      code: { type: 'string', enum: [...allProblems().keys()] },
      instance: { type: 'string' },
      request_id: { type: 'string' },
      errors: {
        type: 'array',
        items: {
          type: 'object',
          required: ['pointer', 'location', 'detail'],
          properties: {
            pointer: { type: 'string', description: 'JSON pointer (RFC 6901) as a URI fragment' },
            location: { type: 'string', enum: ['body', 'query', 'path', 'header'] },
            detail: { type: 'string' },
          },
        },
      },
    },
  } as const;
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info,
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
        schemas: { Problem: problemSchema as unknown as Record<string, unknown> },
      },
    },
    // Adds the schemas named with .meta({ id }) (User, TokenPair, …) as components, so the
    // $refs the operations use resolve.
    transformObject: jsonSchemaTransformObject,
    transform: (input) => {
      const out = jsonSchemaTransform(input);
      const auth = input.route.config?.auth;
      const schema = { ...(out.schema as Record<string, unknown>) };
      if (Array.isArray(auth)) {
        schema['x-roles'] = auth;
        schema.security = [{ bearer: [] }];
      } else {
        schema['x-roles'] = [];
        schema.security = [];
      }
      if (input.route.config?.idempotency) schema['x-idempotency'] = input.route.config.idempotency;
      // Every operation can fail with a problem; say so once, by reference.
      const declared = schema.response as Record<string, unknown> | undefined;
      schema.response = {
        ...(declared ?? { 200: { description: 'Default Response' } }),
        default: {
          description: 'An error (RFC 9457 problem details)',
          content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
        },
      };
      return { schema, url: out.url };
    },
  });
}

/** /docs (Swagger UI), /openapi.json and /problems/{code}. Register after every other route. */
export async function registerDocsRoutes(app: App): Promise<void> {
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true, uiConfig: { deepLinking: true } });
  app.get('/openapi.json', { config: { auth: 'public' }, schema: { hide: true } }, async () => app.swagger());
  app.get(
    '/problems/:code',
    {
      config: { auth: 'public' },
      schema: {
        hide: true,
        params: z.strictObject({ code: z.string().max(64) }),
      },
    },
    async (request) => {
      const def = problemDefinition(request.params.code);
      if (!def) throw new AppError('not_found');
      return { type: `/problems/${request.params.code}`, code: request.params.code, ...def };
    },
  );
}
