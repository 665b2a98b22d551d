/**
 * The encrypted backup file (`.lbk`), format version 1.
 *
 *   header  "LBKBACKUP" (9 bytes) · version u8 = 1 · salt (32) · nonce prefix (8) ·
 *           key check (16) · meta length u32 BE · meta (UTF-8 JSON, not secret)
 *   chunks  final flag u8 · plaintext length u32 BE · ciphertext · GCM tag (16)
 *
 * Keys: HKDF-SHA256(ENCRYPTION_KEY, salt, info "loanbook-backup-v1") gives 80 bytes: the
 * AES-256-GCM data key, a manifest key (32 each) and a 16-byte key check. The check tells "wrong key" apart
 * from "damaged file" before anything is decrypted; with a fresh salt per backup it links
 * no two backups. Each chunk's nonce is the prefix and its index (u32 BE); its additional
 * data is the whole header and its final flag, so a chunk moved, dropped, altered, or
 * a file cut at a chunk boundary (no final chunk) fails authentication (the STREAM
 * construction of Hoang, Reyhanitabar, Rogaway and Vizár, 2015).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export const FORMAT_VERSION = 1;
export const CHUNK_BYTES = 1 << 20;
const MAGIC = Buffer.from('LBKBACKUP', 'ascii');
const SALT_BYTES = 32;
const PREFIX_BYTES = 8;
const CHECK_BYTES = 16;
const TAG_BYTES = 16;
const FIXED_HEADER = MAGIC.length + 1 + SALT_BYTES + PREFIX_BYTES + CHECK_BYTES + 4;
const MAX_META_BYTES = 64 * 1024;
const FRAME_HEAD = 5;

export type BackupErrorCode =
  | 'backup_not_found'
  | 'backup_not_an_archive'
  | 'backup_unsupported_version'
  | 'backup_wrong_key'
  | 'backup_damaged'
  | 'backup_truncated'
  | 'backup_target_not_empty'
  | 'backup_source_in_use'
  | 'backup_tool_missing'
  | 'backup_tool_failed'
  | 'backup_storage_failed'
  | 'backup_invalid_location';

/** An expected failure of a backup command, with a stable code (the CLI prints both). */
export class BackupError extends Error {
  override readonly name = 'BackupError';
  constructor(
    readonly code: BackupErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What the header says about the backup; authenticated with every chunk, never secret. */
export interface ArchiveMeta {
  readonly kind: string;
  readonly created_at: string;
  readonly loanbook_version: string;
  readonly [field: string]: unknown;
}

export interface BackupKeys {
  readonly data: Buffer;
  readonly manifest: Buffer;
  readonly check: Buffer;
}

export function deriveBackupKeys(master: Buffer, salt: Buffer): BackupKeys {
  if (master.length !== 32) throw new Error('the backup key must be 32 bytes');
  const okm = Buffer.from(hkdfSync('sha256', master, salt, 'loanbook-backup-v1', 80));
  return { data: okm.subarray(0, 32), manifest: okm.subarray(32, 64), check: okm.subarray(64, 80) };
}

export interface ParsedHeader {
  readonly version: number;
  readonly salt: Buffer;
  readonly noncePrefix: Buffer;
  readonly keyCheck: Buffer;
  readonly meta: ArchiveMeta;
  /** The header bytes exactly as stored: every chunk's additional data starts with them. */
  readonly raw: Buffer;
}

function buildHeader(salt: Buffer, noncePrefix: Buffer, keyCheck: Buffer, meta: ArchiveMeta): Buffer {
  const metaBytes = Buffer.from(JSON.stringify(meta), 'utf8');
  if (metaBytes.length > MAX_META_BYTES) throw new Error('backup meta is too large');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(metaBytes.length);
  return Buffer.concat([MAGIC, Buffer.from([FORMAT_VERSION]), salt, noncePrefix, keyCheck, len, metaBytes]);
}

/** Parses a header from the start of `buf`; undefined when more bytes are needed. */
export function parseHeader(buf: Buffer): ParsedHeader | undefined {
  const magicSeen = buf.subarray(0, Math.min(buf.length, MAGIC.length));
  if (!magicSeen.equals(MAGIC.subarray(0, magicSeen.length))) {
    throw new BackupError('backup_not_an_archive', 'not a Loanbook backup (.lbk) file');
  }
  if (buf.length < MAGIC.length + 1) return undefined;
  const version = buf[MAGIC.length] as number;
  if (version !== FORMAT_VERSION) {
    throw new BackupError('backup_unsupported_version', `backup format version ${version} is not supported by this Loanbook (it reads version ${FORMAT_VERSION})`);
  }
  if (buf.length < FIXED_HEADER) return undefined;
  let at = MAGIC.length + 1;
  const salt = buf.subarray(at, (at += SALT_BYTES));
  const noncePrefix = buf.subarray(at, (at += PREFIX_BYTES));
  const keyCheck = buf.subarray(at, (at += CHECK_BYTES));
  const metaLen = buf.readUInt32BE(at);
  at += 4;
  if (metaLen > MAX_META_BYTES) throw new BackupError('backup_damaged', 'the backup header is damaged');
  if (buf.length < at + metaLen) return undefined;
  let meta: ArchiveMeta;
  try {
    meta = JSON.parse(buf.subarray(at, at + metaLen).toString('utf8')) as ArchiveMeta;
  } catch {
    throw new BackupError('backup_damaged', 'the backup header is damaged');
  }
  const raw = Buffer.from(buf.subarray(0, at + metaLen));
  return { version, salt: Buffer.from(salt), noncePrefix: Buffer.from(noncePrefix), keyCheck: Buffer.from(keyCheck), meta, raw };
}

function nonce(prefix: Buffer, index: number): Buffer {
  if (index > 0xffffffff) throw new Error('backup too large for one file (2^32 chunks)');
  const n = Buffer.alloc(12);
  prefix.copy(n, 0);
  n.writeUInt32BE(index, PREFIX_BYTES);
  return n;
}

function chunkAad(header: Buffer, final: boolean): Buffer {
  return Buffer.concat([header, Buffer.from([final ? 1 : 0])]);
}

/** Encrypts a byte stream into the archive format; `meta` goes in the clear header. */
export class EncryptStream extends Transform {
  readonly header: Buffer;
  readonly salt: Buffer;
  private readonly keys: BackupKeys;
  private readonly prefix: Buffer;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private index = 0;
  private started = false;

  constructor(master: Buffer, meta: ArchiveMeta, private readonly chunkBytes = CHUNK_BYTES) {
    super();
    this.salt = randomBytes(SALT_BYTES);
    this.prefix = randomBytes(PREFIX_BYTES);
    this.keys = deriveBackupKeys(master, this.salt);
    this.header = buildHeader(this.salt, this.prefix, this.keys.check, meta);
  }

  /** The manifest key of this archive (seals the manifest's summary). */
  get manifestKey(): Buffer {
    return this.keys.manifest;
  }

  private begin(): void {
    if (!this.started) {
      this.started = true;
      this.push(this.header);
    }
  }

  private seal(plain: Buffer, final: boolean): void {
    const cipher = createCipheriv('aes-256-gcm', this.keys.data, nonce(this.prefix, this.index++), { authTagLength: TAG_BYTES });
    cipher.setAAD(chunkAad(this.header, final));
    const ct = Buffer.concat([cipher.update(plain), cipher.final()]);
    const head = Buffer.alloc(FRAME_HEAD);
    head[0] = final ? 1 : 0;
    head.writeUInt32BE(plain.length, 1);
    this.push(Buffer.concat([head, ct, cipher.getAuthTag()]));
  }

  override _transform(data: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.begin();
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes > this.chunkBytes) {
      let all = Buffer.concat(this.pending);
      // Keep at least one byte back: the last chunk must be sealed as final.
      while (all.length > this.chunkBytes) {
        this.seal(all.subarray(0, this.chunkBytes), false);
        all = all.subarray(this.chunkBytes);
      }
      this.pending = [all];
      this.pendingBytes = all.length;
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    this.begin();
    this.seal(Buffer.concat(this.pending), true);
    this.pending = [];
    done();
  }
}

/**
 * Finds which of `keys` (the current ENCRYPTION_KEY first, then those being rotated
 * out) made this archive; a BackupError `backup_wrong_key` when none did.
 */
export function keyFor(header: ParsedHeader, keys: readonly Buffer[]): BackupKeys {
  for (const k of keys) {
    const derived = deriveBackupKeys(k, header.salt);
    if (timingSafeEqual(derived.check, header.keyCheck)) return derived;
  }
  throw new BackupError(
    'backup_wrong_key',
    'this backup was made with a different ENCRYPTION_KEY: set the key that was in use when it was made ' +
      '(or list it in ENCRYPTION_KEY_PREVIOUS); without that key it cannot be decrypted',
  );
}

/**
 * Decrypts an archive. Every chunk is authenticated before its plaintext is pushed; a
 * file that ends without its final chunk, or has bytes after it, errors at the end.
 * Callers that must write nothing unless the whole file is good read it twice (or
 * buffer), see `authenticateArchive`.
 */
export class DecryptStream extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private header: ParsedHeader | undefined;
  private keys: BackupKeys | undefined;
  private index = 0;
  private finished = false;
  plaintextBytes = 0;

  constructor(private readonly candidates: readonly Buffer[]) {
    super();
  }

  get meta(): ArchiveMeta | undefined {
    return this.header?.meta;
  }

  get manifestKey(): Buffer | undefined {
    return this.keys?.manifest;
  }

  override _transform(data: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
      this.drain();
      done();
    } catch (e) {
      done(e as Error);
    }
  }

  private drain(): void {
    if (!this.header) {
      const h = parseHeader(this.buf);
      if (!h) return;
      this.header = h;
      this.keys = keyFor(h, this.candidates);
      this.buf = this.buf.subarray(h.raw.length);
    }
    const header = this.header;
    const keys = this.keys as BackupKeys;
    for (;;) {
      if (this.buf.length === 0) return;
      if (this.finished) throw new BackupError('backup_damaged', 'the backup has data after its final chunk: it was altered');
      if (this.buf.length < FRAME_HEAD) return;
      const flag = this.buf[0] as number;
      const len = this.buf.readUInt32BE(1);
      if (flag > 1 || len > CHUNK_BYTES * 64) throw new BackupError('backup_damaged', `backup chunk ${this.index} is damaged`);
      const frame = FRAME_HEAD + len + TAG_BYTES;
      if (this.buf.length < frame) return;
      const ct = this.buf.subarray(FRAME_HEAD, FRAME_HEAD + len);
      const tag = this.buf.subarray(FRAME_HEAD + len, frame);
      const decipher = createDecipheriv('aes-256-gcm', keys.data, nonce(header.noncePrefix, this.index), { authTagLength: TAG_BYTES });
      decipher.setAAD(chunkAad(header.raw, flag === 1));
      decipher.setAuthTag(tag);
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(ct), decipher.final()]);
      } catch {
        throw new BackupError('backup_damaged', `backup chunk ${this.index} failed authentication: the file was altered or damaged`);
      }
      this.index++;
      this.plaintextBytes += plain.length;
      this.finished = flag === 1;
      this.buf = this.buf.subarray(frame);
      if (plain.length > 0) this.push(plain);
    }
  }

  override _flush(done: TransformCallback): void {
    if (!this.header) {
      done(new BackupError('backup_truncated', 'the backup file is empty or cut off inside its header'));
      return;
    }
    if (!this.finished || this.buf.length > 0) {
      done(new BackupError('backup_truncated', `the backup file is cut off after chunk ${this.index}: it is incomplete`));
      return;
    }
    done();
  }
}

const SEAL_IV = 12;

/** Seals a small JSON value (the manifest summary) with the archive's manifest key. */
export function sealJson(key: Buffer, value: unknown, aad: string): string {
  const iv = randomBytes(SEAL_IV);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, ct, cipher.getAuthTag()]).toString('base64');
}

export function openSealedJson<T>(key: Buffer, sealed: string, aad: string): T {
  const raw = Buffer.from(sealed, 'base64');
  if (raw.length < SEAL_IV + TAG_BYTES) throw new BackupError('backup_damaged', 'the manifest summary is damaged');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, SEAL_IV), { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    const plain = Buffer.concat([decipher.update(raw.subarray(SEAL_IV, raw.length - TAG_BYTES)), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as T;
  } catch {
    throw new BackupError('backup_damaged', 'the manifest summary failed authentication: the manifest was altered or belongs to another backup');
  }
}
