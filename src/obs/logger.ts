/** Structured logs (pino, JSON). Keys are always logged as 16 hex digits (formatKey). */
import pino, { type Logger } from 'pino';

export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { app: 'prfence', ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    // A bigint that slips through is printed as 16 hex digits, never as a lossy number.
    hooks: {
      logMethod(args, method) {
        const fix = (v: unknown): unknown =>
          typeof v === 'bigint'
            ? v.toString(16).padStart(16, '0')
            : v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Error)
              ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fix(x)]))
              : v;
        method.apply(this, args.map(fix) as Parameters<typeof method>);
      },
    },
  });
}

/** An error's message with its causes ("fetch failed: connect ECONNREFUSED 127.0.0.1:6443"). */
export function describeError(e: unknown): string {
  const parts: string[] = [];
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    parts.push(cur instanceof Error ? cur.message : String(cur));
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return parts.join(': ');
}
