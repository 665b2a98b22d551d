import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../src/platform/backup/format.js';
import { EMPTY_SHA256, signV4 } from '../../src/platform/backup/sigv4.js';
import { createS3Store, parseLocation, readSmall, type S3Settings } from '../../src/platform/backup/storage.js';
import { startS3Double, type S3Double } from '../support/s3-server.js';

const CREDS = { accessKeyId: 'AKIDLOANBOOKTEST', secretAccessKey: 'loanbook/test/secret/key/0123456789abcdef' };

async function bytes(stream: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) out.push(c);
  return Buffer.concat(out);
}

async function code(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BackupError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a BackupError');
}

describe('AWS Signature Version 4', () => {
  // The "GET Object" example of https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
  it('reproduces the published GET Object example', () => {
    const signed = signV4(
      {
        method: 'GET',
        path: '/test.txt',
        query: [],
        headers: { Host: 'examplebucket.s3.amazonaws.com', Range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': '20130524T000000Z' },
        payloadSha256: EMPTY_SHA256,
        amzDate: '20130524T000000Z',
        region: 'us-east-1',
      },
      { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
    );
    expect(signed.signature).toBe('f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
    expect(signed.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,' +
        'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
  });
});

describe('S3 backup store (against the loopback S3 double)', () => {
  let s3: S3Double;
  let settings: S3Settings;

  beforeAll(async () => {
    s3 = await startS3Double({ ...CREDS, region: 'eu-west-1', buckets: ['loanbook-backups'], maxKeys: 2 });
    settings = { endpoint: s3.endpoint, region: 'eu-west-1', credentials: CREDS, partBytes: 64 * 1024 };
  });
  afterAll(async () => s3.close());

  it('puts a small object in one request and reads it back', async () => {
    const store = createS3Store('loanbook-backups', 'prod/db', settings);
    const body = randomBytes(1000);
    const before = s3.log.length;
    await store.put('small.lbk', Readable.from([body]));
    expect(s3.log.slice(before).map((r) => `${r.method} ${r.status}`)).toEqual(['PUT 200']);
    expect(s3.objects.get('loanbook-backups/prod/db/small.lbk')).toEqual(body);
    expect(await bytes(await store.get('small.lbk'))).toEqual(body);
  });

  it('uploads a large object in parts (multipart) and reads it back whole', async () => {
    const store = createS3Store('loanbook-backups', 'prod/db', settings);
    const body = randomBytes(64 * 1024 * 3 + 123);
    const before = s3.log.length;
    // Pieces that do not line up with the part size.
    const pieces: Buffer[] = [];
    for (let i = 0; i < body.length; i += 10_000) pieces.push(body.subarray(i, i + 10_000));
    await store.put('big.lbk', Readable.from(pieces));
    const calls = s3.log.slice(before).map((r) => `${r.method} ${r.url.replace(/uploadId=[0-9a-f]+/, 'uploadId=U').replace(/^[^?]*/, '')} ${r.status}`);
    expect(calls).toEqual(['POST ?uploads= 200', 'PUT ?partNumber=1&uploadId=U 200', 'PUT ?partNumber=2&uploadId=U 200', 'PUT ?partNumber=3&uploadId=U 200', 'PUT ?partNumber=4&uploadId=U 200', 'POST ?uploadId=U 200']);
    expect(await bytes(await store.get('big.lbk'))).toEqual(body);
  });

  it('lists the names under its prefix across continuation pages, and only those', async () => {
    const store = createS3Store('loanbook-backups', 'list/here', settings);
    for (const n of ['a.lbk', 'b.lbk', 'c.json', 'd.lbk']) await store.put(n, Readable.from([Buffer.from(n)]));
    await createS3Store('loanbook-backups', 'list/here/nested', settings).put('x.lbk', Readable.from([Buffer.from('x')]));
    await createS3Store('loanbook-backups', 'list/elsewhere', settings).put('y.lbk', Readable.from([Buffer.from('y')]));
    expect((await store.list()).sort()).toEqual(['a.lbk', 'b.lbk', 'c.json', 'd.lbk']);
  });

  it('reports a missing object as not found', async () => {
    const store = createS3Store('loanbook-backups', 'prod/db', settings);
    expect((await code(store.get('nope.lbk'))).code).toBe('backup_not_found');
    expect(await readSmall(store, 'nope.json')).toBeUndefined();
  });

  it('is refused with SignatureDoesNotMatch when the secret is wrong, and stores nothing', async () => {
    const wrong = createS3Store('loanbook-backups', 'prod/db', { ...settings, credentials: { ...CREDS, secretAccessKey: 'not-the-secret' } });
    const failed = await code(wrong.put('denied.lbk', Readable.from([randomBytes(10)])));
    expect(failed.code).toBe('backup_storage_failed');
    expect(failed.message).toMatch(/SignatureDoesNotMatch/);
    expect(s3.log.at(-1)?.status).toBe(403);
    expect(s3.objects.has('loanbook-backups/prod/db/denied.lbk')).toBe(false);

    const unknown = createS3Store('loanbook-backups', 'prod/db', { ...settings, credentials: { ...CREDS, accessKeyId: 'AKIDUNKNOWN' } });
    expect((await code(unknown.list())).message).toMatch(/InvalidAccessKeyId/);
  });

  it('parses s3:// locations: a prefix, or one archive in it', () => {
    const prefix = parseLocation('s3://loanbook-backups/prod/db/', settings);
    expect(prefix.store.description).toBe('s3://loanbook-backups/prod/db');
    expect(prefix.name).toBeUndefined();
    const one = parseLocation('s3://loanbook-backups/prod/db/loanbook-20261201T000000.000Z-postgres.lbk', settings);
    expect(one.store.description).toBe('s3://loanbook-backups/prod/db');
    expect(one.name).toBe('loanbook-20261201T000000.000Z-postgres.lbk');
    expect(() => parseLocation('s3://Bad_Bucket/x', settings)).toThrow(/not an S3 bucket name/);
    expect(() => parseLocation('ftp://host/x', settings)).toThrow(/unsupported backup location/);
  });
});
