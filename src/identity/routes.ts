/** Identity HTTP routes: schemas and handlers only; the rules live in service.ts. */
import { z } from 'zod';
import { unauthenticated, type App } from '../platform/http.js';
import type { FastifyRequest } from 'fastify';
import { ROLES, USER_STATUSES, type TokenPair, type User } from './model.js';
import type { ActorContext, IdentityService } from './service.js';

const ADMIN = ['admin'] as const;
const EVERYONE = ROLES;

const userSchema = z
  .object({
    id: z.uuid(),
    email: z.string(),
    role: z.enum(ROLES),
    status: z.enum(USER_STATUSES),
    created_at: z.string().describe('RFC 3339, UTC'),
    updated_at: z.string().describe('RFC 3339, UTC'),
  })
  .meta({ id: 'User' });

const tokenSchema = z
  .object({
    access_token: z.string(),
    token_type: z.literal('Bearer'),
    expires_in: z.number().int().describe('seconds'),
    refresh_token: z.string(),
    refresh_expires_in: z.number().int().describe('seconds'),
  })
  .meta({ id: 'TokenPair' });

const email = z.email().max(254);

function userView(u: User): z.infer<typeof userSchema> {
  return {
    id: u.id,
    email: u.email,
    role: u.role,
    status: u.status,
    created_at: u.createdAt.toISOString(),
    updated_at: u.updatedAt.toISOString(),
  };
}

function tokenView(t: TokenPair): z.infer<typeof tokenSchema> {
  return {
    access_token: t.accessToken,
    token_type: 'Bearer',
    expires_in: t.accessExpiresIn,
    refresh_token: t.refreshToken,
    refresh_expires_in: t.refreshExpiresIn,
  };
}

function actor(request: FastifyRequest): ActorContext {
  return { actorId: request.principal?.userId ?? null, ip: request.ip, requestId: request.id };
}

function principalOf(request: FastifyRequest) {
  // The role check has already refused anonymous callers; this keeps the type honest.
  if (!request.principal) throw unauthenticated();
  return request.principal;
}

export function registerIdentityRoutes(app: App, identity: IdentityService): void {
  const tags = ['identity'];

  app.post(
    '/v1/auth/token',
    {
      config: { auth: 'public' },
      schema: {
        tags,
        summary: 'Sign in with email and password; returns an access token and a refresh token',
        body: z.strictObject({ email, password: z.string().min(1).max(256) }),
        response: { 200: tokenSchema },
      },
    },
    async (request) => tokenView(await identity.login(request.body, actor(request))),
  );

  app.post(
    '/v1/auth/refresh',
    {
      config: { auth: 'public' },
      schema: {
        tags,
        summary: 'Exchange a refresh token for a new pair (the old one is spent; reusing it revokes the session)',
        body: z.strictObject({ refresh_token: z.string().min(1).max(200) }),
        response: { 200: tokenSchema },
      },
    },
    async (request) => tokenView(await identity.refresh(request.body.refresh_token, actor(request))),
  );

  app.post(
    '/v1/auth/logout',
    {
      config: { auth: EVERYONE },
      schema: { tags, summary: 'Revoke this session: its access and refresh tokens stop working', response: { 204: z.null() } },
    },
    async (request, reply) => {
      await identity.logout(principalOf(request), actor(request));
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/v1/me',
    { config: { auth: EVERYONE }, schema: { tags, summary: 'The signed-in user', response: { 200: userSchema } } },
    async (request) => userView(await identity.getUser(principalOf(request).userId)),
  );

  app.post(
    '/v1/users',
    {
      config: { auth: ADMIN, idempotency: 'optional' },
      schema: {
        tags,
        summary: 'Create a user',
        body: z.strictObject({ email, password: z.string().min(1).max(256), role: z.enum(ROLES) }),
        response: { 201: userSchema },
      },
    },
    async (request, reply) => {
      const user = await identity.createUser(request.body, actor(request));
      return reply.code(201).header('location', `/v1/users/${user.id}`).send(userView(user));
    },
  );

  app.get(
    '/v1/users',
    {
      config: { auth: ADMIN },
      schema: {
        tags,
        summary: 'List users (cursor pagination)',
        querystring: z.strictObject({
          limit: z.coerce.number().int().min(1).max(100).default(20),
          starting_after: z.uuid().optional(),
        }),
        response: { 200: z.object({ data: z.array(userSchema), has_more: z.boolean() }) },
      },
    },
    async (request) => {
      const page = await identity.listUsers(request.query.limit, request.query.starting_after);
      return { data: page.data.map(userView), has_more: page.hasMore };
    },
  );

  const idParams = z.strictObject({ id: z.uuid() });

  app.get(
    '/v1/users/:id',
    { config: { auth: ADMIN }, schema: { tags, summary: 'One user', params: idParams, response: { 200: userSchema } } },
    async (request) => userView(await identity.getUser(request.params.id)),
  );

  app.patch(
    '/v1/users/:id',
    {
      config: { auth: ADMIN },
      schema: {
        tags,
        summary: 'Change a user’s role or status (disable, re-enable)',
        params: idParams,
        body: z
          .strictObject({ role: z.enum(ROLES).optional(), status: z.enum(['active', 'disabled']).optional() })
          .refine((b) => b.role !== undefined || b.status !== undefined, { message: 'give role or status' }),
        response: { 200: userSchema },
      },
    },
    async (request) => userView(await identity.updateUser(request.params.id, request.body, actor(request))),
  );

  app.delete(
    '/v1/users/:id',
    {
      config: { auth: ADMIN },
      schema: { tags, summary: 'Delete a user (kept for the audit trail; every session revoked)', params: idParams, response: { 204: z.null() } },
    },
    async (request, reply) => {
      await identity.updateUser(request.params.id, { status: 'deleted' }, actor(request));
      return reply.code(204).send(null);
    },
  );
}
