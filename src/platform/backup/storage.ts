/**
 * Where backups are kept: a local directory or an S3-compatible bucket (AWS S3, MinIO,
 * R2, …), behind one small port. Objects are written whole or not at all: a directory
 * write goes to a `.partial` file renamed at the end; an S3 multipart upload is aborted
 * on failure.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createHash } from 'node:crypto';
import { BackupError } from './format.js';
import { amzDate, EMPTY_SHA256, signV4, uriEncode, type Credentials } from './sigv4.js';

export interface BackupStore {
  /** For messages: the directory or `s3://bucket/prefix`. */
  readonly description: string;
  /** Stores `name` from `body`, replacing nothing partially. */
  put(name: string, body: Readable): Promise<void>;
  /** The stored bytes of `name`; BackupError `backup_not_found` when there is none. */
  get(name: string): Promise<Readable>;
  /** Names of the objects directly under this location. */
  list(): Promise<string[]>;
  /** Where `name` is on the local file system, for stores that keep files. */
  localPath?(name: string): string;
}

export interface S3Settings {
  /** Base URL (`https://minio.internal:9000`); undefined: AWS, `https://s3.<region>.amazonaws.com`. */
  readonly endpoint: string | undefined;
  readonly region: string;
  readonly credentials: Credentials | undefined;
  /** Multipart part size (bytes, ≥ 5 MiB on AWS); objects smaller than one part go in one PUT. */
  readonly partBytes?: number;
}

/** An archive location split into its store and, when it names one, the archive. */
export interface ParsedLocation {
  readonly store: BackupStore;
  readonly name: string | undefined;
}

export const ARCHIVE_SUFFIX = '.lbk';

/**
 * `location` is a directory or `s3://bucket/prefix`; a path ending in `.lbk` names one
 * archive in it.
 */
export function parseLocation(location: string, s3: S3Settings): ParsedLocation {
  const trimmed = location.replace(/\/+$/, '');
  const isArchive = trimmed.endsWith(ARCHIVE_SUFFIX);
  if (/^s3:\/\//i.test(trimmed)) {
    const rest = trimmed.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    let key = slash < 0 ? '' : rest.slice(slash + 1);
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
      throw new BackupError('backup_invalid_location', `"${bucket}" is not an S3 bucket name (s3://bucket/prefix)`);
    }
    let name: string | undefined;
    if (isArchive) {
      name = key.slice(key.lastIndexOf('/') + 1);
      key = key.slice(0, Math.max(0, key.lastIndexOf('/')));
    }
    return { store: createS3Store(bucket, key, s3), name };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) {
    throw new BackupError('backup_invalid_location', `unsupported backup location "${location}": use a directory or s3://bucket/prefix`);
  }
  const path = resolve(trimmed);
  return isArchive ? { store: createDirectoryStore(dirname(path)), name: basename(path) } : { store: createDirectoryStore(path), name: undefined };
}

export function createDirectoryStore(dir: string): BackupStore {
  return {
    description: dir,
    localPath: (name) => join(dir, name),
    async put(name, body) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const final = join(dir, name);
      const partial = `${final}.partial`;
      try {
        await pipeline(body, createWriteStream(partial, { mode: 0o600 }));
        const fh = await open(partial, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(partial, final);
      } catch (e) {
        await rm(partial, { force: true });
        throw e;
      }
    },
    async get(name) {
      const file = join(dir, name);
      try {
        if (!(await stat(file)).isFile()) throw new Error('not a file');
      } catch {
        throw new BackupError('backup_not_found', `no backup file ${file}`);
      }
      return createReadStream(file);
    },
    async list() {
      try {
        return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw e;
      }
    },
  };
}

const DEFAULT_PART_BYTES = 16 * 1024 * 1024;

export function createS3Store(bucket: string, prefix: string, settings: S3Settings): BackupStore {
  const base = new URL(settings.endpoint ?? `https://s3.${settings.region}.amazonaws.com`);
  const keyOf = (name: string) => (prefix === '' ? name : `${prefix}/${name}`);
  const partBytes = settings.partBytes ?? DEFAULT_PART_BYTES;

  async function request(
    method: string,
    key: string | undefined,
    query: [string, string][],
    body?: Buffer,
    extraHeaders: Record<string, string> = {},
  ): Promise<Response> {
    const credentials = settings.credentials;
    if (credentials === undefined) {
      throw new BackupError('backup_storage_failed', 'S3 storage needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
    }
    const basePath = base.pathname.replace(/\/+$/, '');
    const path = `${basePath}/${uriEncode(bucket)}${key === undefined ? '' : `/${uriEncode(key, false)}`}`;
    const payloadSha256 = body === undefined ? EMPTY_SHA256 : createHash('sha256').update(body).digest('hex');
    const date = amzDate(new Date());
    const headers: Record<string, string> = {
      host: base.host,
      'x-amz-content-sha256': payloadSha256,
      'x-amz-date': date,
      ...extraHeaders,
    };
    const { authorization } = signV4({ method, path, query, headers, payloadSha256, amzDate: date, region: settings.region }, credentials);
    const search = query.map(([k, v]) => `${uriEncode(k)}=${uriEncode(v)}`).join('&');
    const url = `${base.protocol}//${base.host}${path}${search ? `?${search}` : ''}`;
    const { host: _host, ...sent } = headers;
    let res: Response;
    try {
      res = await fetch(url, { method, headers: { ...sent, authorization }, ...(body === undefined ? {} : { body }) });
    } catch (e) {
      throw new BackupError('backup_storage_failed', `S3 ${method} ${url} failed: ${(e as Error).message}`, { cause: e });
    }
    return res;
  }

  async function expectOk(res: Response, what: string): Promise<Response> {
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? `HTTP ${res.status}`;
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
    if (res.status === 404 && (code === 'NoSuchKey' || code === `HTTP 404`)) {
      throw new BackupError('backup_not_found', `${what}: not found`);
    }
    throw new BackupError('backup_storage_failed', `${what}: ${code}${message ? ` (${message})` : ''}`);
  }

  const description = `s3://${bucket}${prefix === '' ? '' : `/${prefix}`}`;

  return {
    description,
    async put(name, body) {
      const key = keyOf(name);
      const what = `S3 upload of ${description}/${name}`;
      const parts = readParts(body, partBytes);
      const first = await parts.next();
      const firstPart = first.done ? Buffer.alloc(0) : first.value;
      const second = first.done ? first : await parts.next();
      if (second.done) {
        await expectOk(await request('PUT', key, [], firstPart, { 'content-type': 'application/octet-stream' }), what);
        return;
      }
      const created = await expectOk(await request('POST', key, [['uploads', '']]), what);
      const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(await created.text())?.[1];
      if (uploadId === undefined) throw new BackupError('backup_storage_failed', `${what}: no UploadId in the response`);
      const etags: string[] = [];
      try {
        const upload = async (part: Buffer) => {
          const n = etags.length + 1;
          const res = await expectOk(await request('PUT', key, [['partNumber', String(n)], ['uploadId', uploadId]], part), `${what} (part ${n})`);
          etags.push(res.headers.get('etag') ?? '');
        };
        await upload(firstPart);
        await upload(second.value);
        for await (const part of parts) await upload(part);
        const xml =
          '<CompleteMultipartUpload>' +
          etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${escapeXml(e)}</ETag></Part>`).join('') +
          '</CompleteMultipartUpload>';
        const done = await expectOk(await request('POST', key, [['uploadId', uploadId]], Buffer.from(xml, 'utf8')), what);
        // S3 may answer 200 and still report an error in the body of a completion.
        const text = await done.text();
        if (/<Error>/.test(text)) throw new BackupError('backup_storage_failed', `${what}: ${/<Code>([^<]*)/.exec(text)?.[1] ?? 'completion failed'}`);
      } catch (e) {
        await request('DELETE', key, [['uploadId', uploadId]]).catch(() => undefined);
        throw e;
      }
    },
    async get(name) {
      const res = await expectOk(await request('GET', keyOf(name), []), `S3 download of ${description}/${name}`);
      if (res.body === null) return Readable.from([]);
      return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    },
    async list() {
      const names: string[] = [];
      const listPrefix = prefix === '' ? '' : `${prefix}/`;
      let token: string | undefined;
      do {
        const query: [string, string][] = [['list-type', '2'], ['prefix', listPrefix]];
        if (token !== undefined) query.push(['continuation-token', token]);
        const res = await expectOk(await request('GET', undefined, query), `S3 listing of ${description}`);
        const xml = await res.text();
        for (const m of xml.matchAll(/<Key>([^<]*)<\/Key>/g)) {
          const key = unescapeXml(m[1] as string);
          const rest = key.slice(listPrefix.length);
          if (!rest.includes('/')) names.push(rest);
        }
        token = /<IsTruncated>true<\/IsTruncated>/.test(xml) ? unescapeXml(/<NextContinuationToken>([^<]*)</.exec(xml)?.[1] ?? '') : undefined;
      } while (token);
      return names;
    },
  };
}

/** Splits a byte stream into buffers of exactly `size` bytes (the last one shorter). */
async function* readParts(body: Readable, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    pending.push(chunk);
    bytes += chunk.length;
    while (bytes >= size) {
      const all = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
      yield all.subarray(0, size);
      pending = [all.subarray(size)];
      bytes -= size;
    }
  }
  if (bytes > 0) yield Buffer.concat(pending);
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function unescapeXml(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&amp;/g, '&');
}

/** Reads a small object (a manifest) as text; undefined when it does not exist. */
export async function readSmall(store: BackupStore, name: string): Promise<string | undefined> {
  let stream: Readable;
  try {
    stream = await store.get(name);
  } catch (e) {
    if (e instanceof BackupError && e.code === 'backup_not_found') return undefined;
    throw e;
  }
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

export async function writeSmall(store: BackupStore, name: string, text: string): Promise<void> {
  await store.put(name, Readable.from([Buffer.from(text, 'utf8')]));
}

/** Copies an archive to a local file (restores read it twice: authenticate, then apply). */
export async function downloadTo(store: BackupStore, name: string, file: string): Promise<void> {
  await pipeline(await store.get(name), createWriteStream(file, { mode: 0o600 }));
}
