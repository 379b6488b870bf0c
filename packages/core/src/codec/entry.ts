import { types } from 'node:util';
import * as zlib from 'node:zlib';
import { type CacheError, cacheError } from '../errors.ts';
import { deserializeValue, serializeValue } from './serialize.ts';

/**
 * Layout (little-endian), all covered by the header CRC except the CRC itself:
 *
 *   0  magic        4  bytes 0x89 'X' 'C' 'E' (the high byte catches text-mode mangling, as in PNG)
 *   4  version      u8
 *   5  codec        u8   0 json, 1 json-tagged, 2 bytes
 *   6  compression  u8   0 none, 1 zstd, 2 brotli
 *   7  flags        u8   bit 0: expiresAt present
 *   8  createdAt    f64  epoch ms
 *  16  expiresAt    f64  epoch ms, 0 when absent
 *  24  payloadBytes u32  payload size before compression
 *  28  storedBytes  u32  payload size as stored
 *  32  payloadCrc   u32  CRC32 of the stored payload
 *  36  tagCount     u16, then per tag: u16 UTF-8 length + bytes
 *   …  headerCrc    u32  CRC32 of every header byte before it
 *   …  payload      storedBytes bytes
 *
 * The header has its own CRC so that `readEntryHeader` can trust metadata (expiry, tags) without
 * touching the payload, and so a flipped bit in a timestamp cannot pass unnoticed.
 */
export const ENTRY_FORMAT_VERSION = 1;

const MAGIC = [0x89, 0x58, 0x43, 0x45] as const;
const FIXED_HEADER_BYTES = 38;
const MIN_ENTRY_BYTES = FIXED_HEADER_BYTES + 4;
const FLAG_EXPIRES = 1;
const MAX_TAG_BYTES = 0xffff;
const MAX_TAGS = 0xffff;
/** Upper bound for a payload; also bounds decompression so a forged header cannot balloon memory. */
const MAX_PAYLOAD_BYTES = 512 * 1024 * 1024;
/** Compression is kept only when it saves at least this share of the payload. */
const MIN_SAVING = 0.1;

const CODECS = ['json', 'json-tagged', 'bytes'] as const;
const COMPRESSIONS = ['none', 'zstd', 'brotli'] as const;

export type EntryCodec = (typeof CODECS)[number];
export type EntryCompression = (typeof COMPRESSIONS)[number];

export interface EntryMeta {
  /** Epoch milliseconds. */
  createdAt: number;
  /** Epoch milliseconds; `undefined` means the entry never expires. */
  expiresAt?: number | undefined;
  tags?: readonly string[] | undefined;
}

export interface CodecOptions {
  /**
   * Payloads of at least this many bytes are compressed (kept only when that saves >= 10%).
   * @default 4096
   */
  compressThreshold?: number;
  /**
   * `auto` uses zstd, or brotli on Node.js builds without zstd (< 22.15); `zstd` also falls back to
   * brotli there. `none` never compresses.
   * @default 'auto'
   */
  compression?: 'auto' | 'zstd' | 'brotli' | 'none';
}

export interface EntryHeader {
  formatVersion: number;
  codec: EntryCodec;
  compression: EntryCompression;
  createdAt: number;
  expiresAt: number | undefined;
  tags: string[];
  /** Payload size before compression. */
  payloadBytes: number;
  /** Payload size as stored (after compression). */
  storedBytes: number;
}

export interface DecodedEntry<T = unknown> extends EntryHeader {
  value: T;
}

interface ParsedHeader extends EntryHeader {
  payloadOffset: number;
  payloadCrc: number;
}

// Namespace access rather than named imports: a missing named export would fail to link on Node
// versions without zstd instead of letting us fall back.
const { crc32 } = zlib;
const hasZstd = typeof zlib.zstdCompressSync === 'function' && typeof zlib.zstdDecompressSync === 'function';

/**
 * Header checksum in JS: for ~40 bytes a table loop is several times cheaper than the native call
 * (plus the subarray it needs), and decode runs on every cache hit. Same CRC-32 as `zlib.crc32`.
 */
const CRC_TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  CRC_TABLE[n] = c;
}

function headerCrc(bytes: Uint8Array, end: number): number {
  let crc = -1;
  for (let i = 0; i < end; i++) crc = CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

function readU16(bytes: Uint8Array, offset: number): number {
  return bytes[offset]! | (bytes[offset + 1]! << 8);
}

function readU32(bytes: Uint8Array, offset: number): number {
  // Multiplying in the top byte keeps the result unsigned; `<< 24` would go negative from 2^31.
  return (
    (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16)) + bytes[offset + 3]! * 0x1000000
  );
}

// Reused scratch space so reading a float does not allocate a DataView per entry.
const scratch = new Uint8Array(8);
const scratchView = new DataView(scratch.buffer);

function readF64(bytes: Uint8Array, offset: number): number {
  for (let i = 0; i < 8; i++) scratch[i] = bytes[offset + i]!;
  return scratchView.getFloat64(0, true);
}

function corrupt(message: string, cause?: unknown): CacheError {
  return cacheError(
    'E_CORRUPT_ENTRY',
    'codec',
    message + '; the entry cannot be used (treat it as a miss and overwrite it)',
    cause === undefined ? undefined : { cause },
  );
}

function invalid(message: string): CacheError {
  return cacheError('E_INVALID_OPTION', 'codec', message);
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function compress(kind: 'zstd' | 'brotli', payload: Uint8Array): Uint8Array {
  if (kind === 'zstd') return zlib.zstdCompressSync(payload, { pledgedSrcSize: payload.byteLength });
  return zlib.brotliCompressSync(payload, {
    params: {
      // Quality 11 (the default) is far too slow for a write path; 5 keeps most of the ratio.
      [zlib.constants.BROTLI_PARAM_QUALITY]: 5,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: payload.byteLength,
    },
  });
}

function decompress(kind: 'zstd' | 'brotli', stored: Uint8Array, payloadBytes: number): Buffer {
  if (kind === 'zstd' && !hasZstd) {
    throw corrupt('entry is zstd-compressed but this Node.js has no zstd support (needs >= 22.15)');
  }
  let payload: Buffer;
  try {
    // maxOutputLength bounds the work and memory to what the (checksummed) header declared.
    const options = { maxOutputLength: Math.max(1, payloadBytes) };
    payload =
      kind === 'zstd' ? zlib.zstdDecompressSync(stored, options) : zlib.brotliDecompressSync(stored, options);
  } catch (error) {
    throw corrupt(`${kind} decompression failed (${(error as Error).message})`, error);
  }
  if (payload.byteLength !== payloadBytes) {
    throw corrupt(`decompressed payload is ${payload.byteLength} bytes, header says ${payloadBytes}`);
  }
  return payload;
}

function resolveOptions(options: CodecOptions | undefined): {
  threshold: number;
  kind: 'zstd' | 'brotli' | 'none';
} {
  const threshold = options?.compressThreshold ?? 4096;
  if (typeof threshold !== 'number' || Number.isNaN(threshold) || threshold < 0) {
    throw invalid(`compressThreshold must be a number >= 0 (bytes), got ${String(threshold)}`);
  }
  const compression = options?.compression ?? 'auto';
  switch (compression) {
    case 'none':
    case 'brotli':
      return { threshold, kind: compression };
    case 'auto':
    case 'zstd':
      return { threshold, kind: hasZstd ? 'zstd' : 'brotli' };
    default:
      throw invalid(
        `compression must be 'auto', 'zstd', 'brotli' or 'none', got ${JSON.stringify(compression)}`,
      );
  }
}

function encodeTags(tags: readonly string[] | undefined): Buffer[] {
  if (tags === undefined) return [];
  if (!Array.isArray(tags) || tags.length > MAX_TAGS)
    throw invalid(`tags must be an array of at most ${MAX_TAGS} strings`);
  const encoded: Buffer[] = [];
  for (const tag of tags) {
    if (typeof tag !== 'string') throw invalid(`tags must be strings, got ${typeof tag}`);
    const bytes = Buffer.from(tag, 'utf8');
    if (bytes.byteLength > MAX_TAG_BYTES)
      throw invalid(`tag of ${bytes.byteLength} UTF-8 bytes exceeds ${MAX_TAG_BYTES}`);
    encoded.push(bytes);
  }
  return encoded;
}

/**
 * Serialises `value` (see `serializeValue`; a top-level Uint8Array / Buffer is stored raw and reads
 * back as a Uint8Array, while a nested Buffer reads back as a Buffer) with its metadata into the
 * self-checking binary form backends store verbatim.
 *
 * @throws UnserializableValueError for values that cannot be stored;
 *   CacheError `E_INVALID_OPTION` for bad metadata or options.
 */
export function encodeEntry(value: unknown, meta: EntryMeta, options?: CodecOptions): Uint8Array {
  const { threshold, kind } = resolveOptions(options);
  const { createdAt, expiresAt } = meta;
  if (typeof createdAt !== 'number' || !Number.isFinite(createdAt)) {
    throw invalid(`createdAt must be a finite number (epoch ms), got ${String(createdAt)}`);
  }
  if (expiresAt !== undefined && (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))) {
    throw invalid(`expiresAt must be a finite number (epoch ms) or undefined, got ${String(expiresAt)}`);
  }
  const tags = encodeTags(meta.tags);

  let codec: EntryCodec;
  let text: string | undefined;
  let payload: Uint8Array | undefined;
  let payloadBytes: number;
  if (types.isUint8Array(value)) {
    codec = 'bytes';
    payload = value;
    payloadBytes = value.byteLength;
  } else {
    const serialized = serializeValue(value);
    codec = serialized.tagged ? 'json-tagged' : 'json';
    text = serialized.text;
    payloadBytes = Buffer.byteLength(text, 'utf8');
  }
  if (payloadBytes > MAX_PAYLOAD_BYTES) {
    throw cacheError(
      'E_UNSERIALIZABLE',
      'codec',
      `encoded value is ${payloadBytes} bytes, over the ${MAX_PAYLOAD_BYTES} byte limit of one entry`,
    );
  }

  let compression: EntryCompression = 'none';
  if (kind !== 'none' && payloadBytes >= threshold) {
    payload ??= Buffer.from(text!, 'utf8');
    const compressed = compress(kind, payload);
    if (compressed.byteLength <= payloadBytes * (1 - MIN_SAVING)) {
      payload = compressed;
      compression = kind;
    }
  }

  let headerBytes = MIN_ENTRY_BYTES;
  for (const tag of tags) headerBytes += 2 + tag.byteLength;
  const storedBytes = payload === undefined ? payloadBytes : payload.byteLength;
  const out = new Uint8Array(headerBytes + storedBytes);
  // Small uncompressed text is written straight into the entry, saving an intermediate copy.
  if (payload === undefined) asBuffer(out).write(text!, headerBytes, 'utf8');
  else out.set(payload, headerBytes);

  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[4] = ENTRY_FORMAT_VERSION;
  out[5] = CODECS.indexOf(codec);
  out[6] = COMPRESSIONS.indexOf(compression);
  out[7] = expiresAt === undefined ? 0 : FLAG_EXPIRES;
  view.setFloat64(8, createdAt, true);
  view.setFloat64(16, expiresAt ?? 0, true);
  view.setUint32(24, payloadBytes, true);
  view.setUint32(28, storedBytes, true);
  view.setUint32(32, crc32(out.subarray(headerBytes)), true);
  view.setUint16(36, tags.length, true);
  let offset = FIXED_HEADER_BYTES;
  for (const tag of tags) {
    view.setUint16(offset, tag.byteLength, true);
    out.set(tag, offset + 2);
    offset += 2 + tag.byteLength;
  }
  view.setUint32(offset, headerCrc(out, offset), true);
  return out;
}

/**
 * Tags are short and usually ASCII, where building the string in JS beats a native decode call.
 * The bytes are covered by the header CRC and were written from JS strings, so they are valid UTF-8.
 */
function decodeTag(bytes: Uint8Array, start: number, end: number): string {
  let tag = '';
  for (let i = start; i < end; i++) {
    const byte = bytes[i]!;
    if (byte >= 0x80) return asBuffer(bytes).toString('utf8', start, end);
    tag += String.fromCharCode(byte);
  }
  return tag;
}

function parseHeader(bytes: Uint8Array): ParsedHeader {
  if (!(bytes instanceof Uint8Array)) throw corrupt(`expected a Uint8Array, got ${typeof bytes}`);
  const length = bytes.byteLength;
  if (length < MIN_ENTRY_BYTES)
    throw corrupt(`truncated entry: ${length} bytes, a header needs at least ${MIN_ENTRY_BYTES}`);
  if (bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1] || bytes[2] !== MAGIC[2] || bytes[3] !== MAGIC[3]) {
    throw corrupt('not a cache entry (bad magic bytes)');
  }
  const formatVersion = bytes[4]!;
  // Checked before anything else so that a newer layout is reported as such, not as garbage.
  if (formatVersion !== ENTRY_FORMAT_VERSION) {
    throw corrupt(
      formatVersion > ENTRY_FORMAT_VERSION
        ? `entry format version ${formatVersion} is newer than this build supports (${ENTRY_FORMAT_VERSION}); upgrade @x/cache-core`
        : `unknown entry format version ${formatVersion}`,
    );
  }
  const tagCount = readU16(bytes, 36);
  let offset = FIXED_HEADER_BYTES;
  for (let i = 0; i < tagCount; i++) {
    if (offset + 2 > length) throw corrupt('truncated entry: header ends inside the tag list');
    offset += 2 + readU16(bytes, offset);
  }
  if (offset + 4 > length) throw corrupt('truncated entry: header ends inside the tag list');
  if (headerCrc(bytes, offset) !== readU32(bytes, offset)) throw corrupt('header checksum mismatch');
  const payloadOffset = offset + 4;

  const codec = CODECS[bytes[5]!];
  const compression = COMPRESSIONS[bytes[6]!];
  const flags = bytes[7]!;
  if (codec === undefined) throw corrupt(`unknown codec id ${bytes[5]}`);
  if (compression === undefined) throw corrupt(`unknown compression id ${bytes[6]}`);
  if ((flags & ~FLAG_EXPIRES) !== 0) throw corrupt(`unknown header flags ${flags}`);
  const createdAt = readF64(bytes, 8);
  const expiresAt = flags & FLAG_EXPIRES ? readF64(bytes, 16) : undefined;
  const payloadBytes = readU32(bytes, 24);
  const storedBytes = readU32(bytes, 28);
  if (!Number.isFinite(createdAt) || (expiresAt !== undefined && !Number.isFinite(expiresAt))) {
    throw corrupt('timestamps are not finite numbers');
  }
  if (payloadOffset + storedBytes !== length) {
    throw corrupt(
      payloadOffset + storedBytes > length
        ? `truncated entry: payload has ${length - payloadOffset} of ${storedBytes} bytes`
        : `${length - payloadOffset - storedBytes} unexpected bytes after the payload`,
    );
  }
  if (payloadBytes > MAX_PAYLOAD_BYTES) throw corrupt(`payload claims ${payloadBytes} bytes, over the limit`);
  if (compression === 'none' && payloadBytes !== storedBytes) {
    throw corrupt('uncompressed payload size differs from stored size');
  }

  const tags: string[] = [];
  offset = FIXED_HEADER_BYTES;
  for (let i = 0; i < tagCount; i++) {
    const tagLength = readU16(bytes, offset);
    tags.push(decodeTag(bytes, offset + 2, offset + 2 + tagLength));
    offset += 2 + tagLength;
  }

  return {
    formatVersion,
    codec,
    compression,
    createdAt,
    expiresAt,
    tags,
    payloadBytes,
    storedBytes,
    payloadOffset,
    payloadCrc: readU32(bytes, 32),
  };
}

/**
 * Reads and verifies the header only (magic, version, header checksum, sizes): cheap enough for
 * expiry or tag checks. The payload checksum is verified by `decodeEntry`.
 *
 * @throws CacheError `E_CORRUPT_ENTRY`
 */
export function readEntryHeader(bytes: Uint8Array): EntryHeader {
  const header = parseHeader(bytes);
  return {
    formatVersion: header.formatVersion,
    codec: header.codec,
    compression: header.compression,
    createdAt: header.createdAt,
    expiresAt: header.expiresAt,
    tags: header.tags,
    payloadBytes: header.payloadBytes,
    storedBytes: header.storedBytes,
  };
}

/**
 * Verifies, decompresses and parses an entry made by `encodeEntry`; never returns partial or
 * unchecked data.
 *
 * @throws CacheError `E_CORRUPT_ENTRY` on any mismatch (format, truncation, checksum, JSON).
 */
export interface DecodeOptions {
  /**
   * Verify the payload's CRC32. Only bytes that never left this process (the in-memory level
   * keeps what this process encoded) may skip it; the header is always verified.
   * @default true
   */
  verifyChecksum?: boolean;
}

export function decodeEntry<T = unknown>(bytes: Uint8Array, options?: DecodeOptions): DecodedEntry<T> {
  const header = parseHeader(bytes);
  // One Buffer view of the payload serves the checksum, the decompression and the text.
  const stored = Buffer.from(bytes.buffer, bytes.byteOffset + header.payloadOffset, header.storedBytes);
  if (options?.verifyChecksum !== false && crc32(stored) !== header.payloadCrc) {
    throw corrupt('payload checksum mismatch');
  }
  const payload =
    header.compression === 'none' ? stored : decompress(header.compression, stored, header.payloadBytes);

  let value: unknown;
  if (header.codec === 'bytes') {
    // Copy so the value never aliases the caller's (possibly reused) buffer and is a plain Uint8Array.
    value = new Uint8Array(payload);
  } else {
    value = deserializeValue(payload.toString('utf8'), header.codec === 'json-tagged');
  }
  return {
    formatVersion: header.formatVersion,
    codec: header.codec,
    compression: header.compression,
    createdAt: header.createdAt,
    expiresAt: header.expiresAt,
    tags: header.tags,
    payloadBytes: header.payloadBytes,
    storedBytes: header.storedBytes,
    value: value as T,
  };
}
