export {
  type CodecOptions,
  type DecodedEntry,
  type DecodeOptions,
  decodeEntry,
  ENTRY_FORMAT_VERSION,
  type EntryCodec,
  type EntryCompression,
  type EntryHeader,
  type EntryMeta,
  encodeEntry,
  readEntryHeader,
} from './entry.ts';
export { deserializeValue, serializeValue } from './serialize.ts';
