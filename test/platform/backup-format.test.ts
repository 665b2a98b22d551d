import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { BackupError, DecryptStream, EncryptStream, openSealedJson, parseHeader, sealJson } from '../../src/platform/backup/format.js';

const KEY = randomBytes(32);
const OTHER = randomBytes(32);
const META = { kind: 'postgres', created_at: '2026-12-01T00:00:00.000Z', loanbook_version: '0.1.0' };

async function collect(stream: Readable | AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) out.push(c);
  return Buffer.concat(out);
}

/** Encrypts `plain`, fed in pieces of `piece` bytes, with chunks of `chunkBytes`. */
async function encrypt(plain: Buffer, chunkBytes: number, piece = 7): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < plain.length; i += piece) pieces.push(plain.subarray(i, i + piece));
  return collect(Readable.from(pieces).pipe(new EncryptStream(KEY, META, chunkBytes)));
}

async function decrypt(archive: Buffer, keys: Buffer[] = [KEY]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from([archive]), new DecryptStream(keys), new Writable({ write: (c: Buffer, _e, done) => (out.push(c), done()) }));
  return Buffer.concat(out);
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BackupError) return e.code;
    throw e;
  }
  throw new Error('expected a BackupError');
}

/** Offsets of each chunk frame (after the header), for surgery on the archive. */
function frames(archive: Buffer): { start: number; end: number }[] {
  const header = parseHeader(archive);
  if (!header) throw new Error('no header');
  const out: { start: number; end: number }[] = [];
  let at = header.raw.length;
  while (at < archive.length) {
    const len = archive.readUInt32BE(at + 1);
    out.push({ start: at, end: at + 5 + len + 16 });
    at += 5 + len + 16;
  }
  return out;
}

describe('backup archive format', () => {
  it.each([0, 1, 63, 64, 65, 1000])('round-trips %i bytes through chunks of 64 bytes', async (size) => {
    const plain = randomBytes(size);
    const archive = await encrypt(plain, 64);
    if (size >= 32) expect(archive.includes(plain.subarray(0, 32))).toBe(false);
    expect(await decrypt(archive)).toEqual(plain);
    expect(frames(archive)).toHaveLength(Math.max(1, Math.ceil(size / 64)));
  });

  it('exposes the clear header meta and refuses what is not an archive', async () => {
    const archive = await encrypt(Buffer.from('x'), 64);
    expect(parseHeader(archive)?.meta).toEqual(META);
    expect(await failure(decrypt(Buffer.from('PGDMP custom dump')))).toBe('backup_not_an_archive');
    const future = Buffer.from(archive);
    future[9] = 2;
    expect(await failure(decrypt(future))).toBe('backup_unsupported_version');
  });

  it('tells a wrong key apart from damage, and accepts a previous key', async () => {
    const archive = await encrypt(randomBytes(300), 64);
    expect(await failure(decrypt(archive, [OTHER]))).toBe('backup_wrong_key');
    expect((await decrypt(archive, [OTHER, KEY])).length).toBe(300);
  });

  it('detects truncation at and between chunk boundaries, and trailing data', async () => {
    const archive = await encrypt(randomBytes(300), 64);
    const f = frames(archive);
    expect(await failure(decrypt(archive.subarray(0, (f[2] as { start: number }).start)))).toBe('backup_truncated');
    expect(await failure(decrypt(archive.subarray(0, archive.length - 1)))).toBe('backup_truncated');
    expect(await failure(decrypt(archive.subarray(0, 20)))).toBe('backup_truncated');
    expect(await failure(decrypt(Buffer.concat([archive, archive.subarray((f[0] as { start: number }).start, (f[0] as { end: number }).end)])))).toBe('backup_damaged');
  });

  it('detects a flipped bit, a dropped or reordered chunk, a forged final flag and an altered header', async () => {
    const archive = await encrypt(randomBytes(300), 64);
    const f = frames(archive) as { start: number; end: number }[];
    const flipped = Buffer.from(archive);
    flipped.writeUInt8(flipped.readUInt8(f[1]!.start + 10) ^ 1, f[1]!.start + 10);
    expect(await failure(decrypt(flipped))).toBe('backup_damaged');

    const dropped = Buffer.concat([archive.subarray(0, f[1]!.start), archive.subarray(f[2]!.start)]);
    expect(await failure(decrypt(dropped))).toBe('backup_damaged');

    const swapped = Buffer.concat([archive.subarray(0, f[1]!.start), archive.subarray(f[2]!.start, f[2]!.end), archive.subarray(f[1]!.start, f[1]!.end), archive.subarray(f[3]!.start)]);
    expect(await failure(decrypt(swapped))).toBe('backup_damaged');

    // Cut after chunk 2 and mark it final: the flag is authenticated, so this fails.
    const forged = Buffer.from(archive.subarray(0, f[2]!.end));
    forged[f[2]!.start] = 1;
    expect(await failure(decrypt(forged))).toBe('backup_damaged');

    const header = Buffer.from(archive);
    const metaAt = header.indexOf(Buffer.from('postgres'));
    header.write('pglite!!', metaAt);
    expect(await failure(decrypt(header))).toBe('backup_damaged');
  });

  it('seals JSON so that another additional data or key does not open it', () => {
    const key = randomBytes(32);
    const sealed = sealJson(key, [{ name: 'rows.loans', value: '3' }], 'manifest-a');
    expect(openSealedJson(key, sealed, 'manifest-a')).toEqual([{ name: 'rows.loans', value: '3' }]);
    expect(() => openSealedJson(key, sealed, 'manifest-b')).toThrow(/failed authentication/);
    expect(() => openSealedJson(randomBytes(32), sealed, 'manifest-a')).toThrow(/failed authentication/);
  });
});
