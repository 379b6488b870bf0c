export { canonicalize, hashCanonical, hashRequest, KEY_SCHEMA_VERSION } from './canonical.ts';
export { buildKey, keyPrefix, type NameKind, type ParsedKey, parseKey, validateName } from './names.ts';
