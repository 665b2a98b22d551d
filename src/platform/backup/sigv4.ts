/**
 * AWS Signature Version 4 for S3 requests, header form
 * (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
 * Checked against the "GET Object" example of that page (test/platform/backup-s3.test.ts).
 */
import { createHash, createHmac } from 'node:crypto';

export const EMPTY_SHA256 = createHash('sha256').update('').digest('hex');

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface SignInput {
  readonly method: string;
  /** The path as sent, already URI-encoded (S3 encodes each key segment once). */
  readonly path: string;
  /** Query parameters, unencoded. */
  readonly query: readonly (readonly [string, string])[];
  /** Headers to sign, names in any case; `host` must be among them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly payloadSha256: string;
  /** `YYYYMMDD'T'HHMMSS'Z'`. */
  readonly amzDate: string;
  readonly region: string;
  readonly service?: string;
}

/** RFC 3986 unreserved characters stay; everything else is %XX (upper case), as SigV4 requires. */
export function uriEncode(value: string, encodeSlash = true): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (c === '/' && !encodeSlash)) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function canonicalQuery(query: readonly (readonly [string, string])[]): string {
  return query
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

export function canonicalRequest(input: SignInput): { text: string; signedHeaders: string } {
  const entries = Object.entries(input.headers)
    .map(([k, v]) => [k.toLowerCase(), v.trim().replace(/\s+/g, ' ')] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const signedHeaders = entries.map(([k]) => k).join(';');
  const text = [
    input.method,
    input.path,
    canonicalQuery(input.query),
    entries.map(([k, v]) => `${k}:${v}\n`).join(''),
    signedHeaders,
    input.payloadSha256,
  ].join('\n');
  return { text, signedHeaders };
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** The signature and the Authorization header value for `input`. */
export function signV4(input: SignInput, credentials: Credentials): { signature: string; authorization: string } {
  const service = input.service ?? 's3';
  const date = input.amzDate.slice(0, 8);
  const scope = `${date}/${input.region}/${service}/aws4_request`;
  const { text, signedHeaders } = canonicalRequest(input);
  const stringToSign = ['AWS4-HMAC-SHA256', input.amzDate, scope, createHash('sha256').update(text, 'utf8').digest('hex')].join('\n');
  const kDate = hmac(`AWS4${credentials.secretAccessKey}`, date);
  const kSigning = hmac(hmac(hmac(kDate, input.region), service), 'aws4_request');
  const signature = createHmac('sha256', kSigning).update(stringToSign, 'utf8').digest('hex');
  return {
    signature,
    authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope},SignedHeaders=${signedHeaders},Signature=${signature}`,
  };
}

export function amzDate(now: Date): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}
