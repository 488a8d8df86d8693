/**
 * RFC 8785 (JSON Canonicalization Scheme): object keys sorted by UTF-16 code units, no
 * whitespace, strings and numbers as ECMAScript serialises them (section 3.2.2 defers to it).
 * Used where bytes must be hashed or signed: audit log entries, operator proposals.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const record = value as Record<string, unknown>;
    // Undefined members are absent, as JSON.stringify treats them.
    const keys = Object.keys(value)
      .filter((k) => record[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(',')}}`;
  }
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new TypeError('canonical JSON has no form for a non-finite number');
  }
  return JSON.stringify(value);
}
