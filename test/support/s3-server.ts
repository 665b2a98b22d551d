/**
 * A loopback S3 double: the REST operations Loanbook's backup store uses (PutObject,
 * GetObject, ListObjectsV2, multipart upload), path-style, answering with S3's XML. It
 * checks every request's Signature Version 4 as S3 does: the canonical request is
 * rebuilt here from the raw request (method, path as sent, query, the signed headers,
 * the payload hash, which must match the body) and signed with the secret it knows; a
 * wrong secret gets 403 SignatureDoesNotMatch.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { signV4 } from '../../src/platform/backup/sigv4.js';

export interface S3Double {
  readonly endpoint: string;
  readonly objects: Map<string, Buffer>;
  /** Every request: method, path and query as received, and the status answered. */
  readonly log: { method: string; url: string; status: number }[];
  close(): Promise<void>;
}

export interface S3DoubleOptions {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly buckets: readonly string[];
  /** ListObjectsV2 page size (S3: 1000), small to exercise continuation tokens. */
  readonly maxKeys?: number;
}

function xml(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/xml' }).end(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
}

function error(res: ServerResponse, status: number, code: string, message: string): void {
  xml(res, status, `<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${randomBytes(8).toString('hex')}</RequestId></Error>`);
}

function escape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Query pairs as S3 reads them: split on & and =, percent-decoded. */
function queryPairs(raw: string): [string, string][] {
  if (raw === '') return [];
  return raw.split('&').map((p) => {
    const i = p.indexOf('=');
    const k = i < 0 ? p : p.slice(0, i);
    const v = i < 0 ? '' : p.slice(i + 1);
    return [decodeURIComponent(k), decodeURIComponent(v)];
  });
}

function checkSignature(req: IncomingMessage, body: Buffer, path: string, query: [string, string][], opts: S3DoubleOptions): [number, string, string] | undefined {
  const auth = req.headers.authorization ?? '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/s3\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return [403, 'AccessDenied', 'missing or malformed Authorization header'];
  const [, accessKeyId, date, region, signedHeaders, signature] = m as unknown as [string, string, string, string, string, string];
  if (accessKeyId !== opts.accessKeyId) return [403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.'];
  if (region !== opts.region) return [400, 'AuthorizationHeaderMalformed', `the region '${region}' is wrong; expecting '${opts.region}'`];
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (amzDate.slice(0, 8) !== date) return [403, 'SignatureDoesNotMatch', 'x-amz-date does not match the credential scope'];
  const payloadHash = String(req.headers['x-amz-content-sha256'] ?? '');
  if (payloadHash !== 'UNSIGNED-PAYLOAD' && payloadHash !== createHash('sha256').update(body).digest('hex')) {
    return [400, 'XAmzContentSHA256Mismatch', 'The provided x-amz-content-sha256 header does not match what was computed.'];
  }
  const names = signedHeaders.split(';');
  if (!names.includes('host') || !names.includes('x-amz-date')) return [403, 'AccessDenied', 'host and x-amz-date must be signed'];
  const headers: Record<string, string> = {};
  for (const n of names) {
    const v = req.headers[n];
    if (v === undefined) return [403, 'SignatureDoesNotMatch', `signed header ${n} is missing`];
    headers[n] = Array.isArray(v) ? v.join(',') : v;
  }
  const expected = signV4({ method: req.method ?? 'GET', path, query, headers, payloadSha256: payloadHash, amzDate, region }, opts).signature;
  if (expected !== signature) {
    return [403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.'];
  }
  return undefined;
}

export async function startS3Double(opts: S3DoubleOptions): Promise<S3Double> {
  const objects = new Map<string, Buffer>();
  const uploads = new Map<string, { key: string; parts: Map<number, Buffer> }>();
  const log: S3Double['log'] = [];
  const etag = (b: Buffer) => `"${createHash('md5').update(b).digest('hex')}"`;

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = queryPairs(q < 0 ? '' : url.slice(q + 1));
    const params = new Map(query);
    const denied = checkSignature(req, body, path, query, opts);
    if (denied) return error(res, ...denied);
    const segments = path.split('/').slice(1);
    const bucket = decodeURIComponent(segments[0] ?? '');
    const key = segments.slice(1).map(decodeURIComponent).join('/');
    if (!opts.buckets.includes(bucket)) return error(res, 404, 'NoSuchBucket', 'The specified bucket does not exist');
    const id = `${bucket}/${key}`;

    if (req.method === 'GET' && key === '') {
      if (params.get('list-type') !== '2') return error(res, 400, 'InvalidArgument', 'only ListObjectsV2 is supported');
      const prefix = params.get('prefix') ?? '';
      const after = params.has('continuation-token') ? Buffer.from(params.get('continuation-token') as string, 'base64url').toString('utf8') : '';
      const all = [...objects.keys()]
        .filter((k) => k.startsWith(`${bucket}/${prefix}`))
        .map((k) => k.slice(bucket.length + 1))
        .filter((k) => k > after)
        .sort();
      const max = opts.maxKeys ?? 1000;
      const page = all.slice(0, max);
      const truncated = all.length > max;
      return xml(
        res,
        200,
        `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucket}</Name><Prefix>${escape(prefix)}</Prefix>` +
          `<KeyCount>${page.length}</KeyCount><MaxKeys>${max}</MaxKeys><IsTruncated>${truncated}</IsTruncated>` +
          page.map((k) => `<Contents><Key>${escape(k)}</Key><Size>${(objects.get(`${bucket}/${k}`) as Buffer).length}</Size></Contents>`).join('') +
          (truncated ? `<NextContinuationToken>${Buffer.from(page.at(-1) as string).toString('base64url')}</NextContinuationToken>` : '') +
          '</ListBucketResult>',
      );
    }
    if (req.method === 'GET') {
      const obj = objects.get(id);
      if (!obj) return error(res, 404, 'NoSuchKey', 'The specified key does not exist.');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': obj.length, etag: etag(obj) }).end(obj);
      return;
    }
    if (req.method === 'POST' && params.has('uploads')) {
      const uploadId = randomBytes(12).toString('hex');
      uploads.set(uploadId, { key: id, parts: new Map() });
      return xml(res, 200, `<InitiateMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${escape(key)}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`);
    }
    const uploadId = params.get('uploadId');
    if (uploadId !== undefined) {
      const upload = uploads.get(uploadId);
      if (!upload || upload.key !== id) return error(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
      if (req.method === 'PUT') {
        const n = Number(params.get('partNumber'));
        if (!Number.isInteger(n) || n < 1 || n > 10000) return error(res, 400, 'InvalidArgument', 'bad partNumber');
        upload.parts.set(n, body);
        res.writeHead(200, { etag: etag(body) }).end();
        return;
      }
      if (req.method === 'DELETE') {
        uploads.delete(uploadId);
        res.writeHead(204).end();
        return;
      }
      if (req.method === 'POST') {
        const listed = [...body.toString('utf8').matchAll(/<Part><PartNumber>(\d+)<\/PartNumber><ETag>([^<]*)<\/ETag><\/Part>/g)].map((p) => ({
          n: Number(p[1]),
          etag: (p[2] as string).replace(/&quot;/g, '"'),
        }));
        const chunks: Buffer[] = [];
        for (const [i, p] of listed.entries()) {
          const part = upload.parts.get(p.n);
          if (p.n !== i + 1 || !part || etag(part) !== p.etag) return error(res, 400, 'InvalidPart', `part ${p.n} is missing or its ETag does not match`);
          chunks.push(part);
        }
        objects.set(id, Buffer.concat(chunks));
        uploads.delete(uploadId);
        return xml(res, 200, `<CompleteMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${escape(key)}</Key><ETag>"multipart-${listed.length}"</ETag></CompleteMultipartUploadResult>`);
      }
    }
    if (req.method === 'PUT' && query.length === 0) {
      objects.set(id, body);
      res.writeHead(200, { etag: etag(body) }).end();
      return;
    }
    return error(res, 501, 'NotImplemented', `${req.method} ${url} is not implemented by the S3 double`);
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.on('finish', () => log.push({ method: req.method ?? '', url: req.url ?? '', status: res.statusCode }));
      handle(req, res, Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    objects,
    log,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
