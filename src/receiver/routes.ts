/**
 * routes.ts — `http.route` for SERVER spans: a low-cardinality template of the request
 * path, so the route can be a metric attribute without one series per user id.
 *
 * Sidelight sees bytes, not the server framework's router, so the route is a guess:
 * configured templates (`http.routes.templates`, tried in order, first match wins) and
 * else, with `http.routes.heuristic`, the path with each segment that looks like an
 * identifier replaced by a placeholder: digits → `{id}`, a UUID → `{uuid}`, a hex string
 * of 16+ characters (or 8+ with a digit and a letter) → `{hash}`, a token of 20+
 * characters mixing letters and digits → `{token}`. Paths deeper than MAX_SEGMENTS end
 * in `/*`. Neither source matching and the heuristic off: no route (semconv: do not set
 * http.route when it is not known).
 *
 * Template syntax: segments separated by `/`; `{name}` matches one non-empty segment;
 * `*` as the last segment matches the rest (zero or more segments). The route is the
 * template as written. Checked by `parseRouteTemplate` (config validation uses it).
 *
 * Pure and stateless after construction; safe to share between connections.
 */

/** Segments of a path examined by the heuristic; deeper paths end in `/*`. */
export const MAX_SEGMENTS = 32;
/** Longest template accepted in configuration. */
export const MAX_TEMPLATE_LENGTH = 512;

export interface RouteOptions {
  /** collapse identifier-like path segments when no template matches */
  heuristic: boolean;
  /** route templates, first match wins */
  templates: string[];
}

type Part = { literal: string } | { param: string } | { rest: true };

interface Template {
  route: string;
  parts: Part[];
}

/**
 * Parses one template; throws an Error saying what is wrong with it. Accepted:
 * `/`, `/users/{id}`, `/static/*`, `/v1/{tenant}/items/{item}/*`.
 */
export function parseRouteTemplate(t: string): Part[] {
  if (t.length === 0 || t.length > MAX_TEMPLATE_LENGTH) throw new Error(`must be 1 to ${MAX_TEMPLATE_LENGTH} characters`);
  if (!t.startsWith('/')) throw new Error('must start with "/"');
  if (/[?#\s]/.test(t)) throw new Error('must not contain "?", "#" or white space');
  if (t === '/') return [];
  const segs = t.slice(1).split('/');
  const parts: Part[] = [];
  segs.forEach((s, i) => {
    if (s === '*') {
      if (i !== segs.length - 1) throw new Error('"*" is allowed only as the last segment');
      parts.push({ rest: true });
    } else if (/^\{[A-Za-z_][A-Za-z0-9_.-]*\}$/.test(s)) {
      parts.push({ param: s.slice(1, -1) });
    } else if (/[{}*]/.test(s)) {
      throw new Error(`segment ${JSON.stringify(s)}: a placeholder is a whole segment like {id}, and "*" only the whole last segment`);
    } else if (s === '' && i !== segs.length - 1) {
      throw new Error('must not contain an empty segment ("//")');
    } else {
      parts.push({ literal: s });
    }
  });
  return parts;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HEX = /^[0-9a-f]+$/i;
const TOKEN = /^[A-Za-z0-9_~.=-]+$/;

/** The placeholder for one path segment, or the segment itself when it looks like a name. */
export function collapseSegment(s: string): string {
  if (s === '') return s;
  if (/^\d+$/.test(s)) return '{id}';
  if (UUID.test(s)) return '{uuid}';
  if (HEX.test(s) && (s.length >= 16 || (s.length >= 8 && /\d/.test(s) && /[a-f]/i.test(s)))) return '{hash}';
  if (s.length >= 20 && TOKEN.test(s) && /\d/.test(s) && /[A-Za-z]/.test(s)) return '{token}';
  return s;
}

export class RouteTemplater {
  private readonly heuristic: boolean;
  private readonly templates: Template[];

  /** Throws on a bad template (config validation reports them first, with the key). */
  constructor(opts: RouteOptions) {
    this.heuristic = opts.heuristic;
    this.templates = opts.templates.map((route, i) => {
      try {
        return { route, parts: parseRouteTemplate(route) };
      } catch (e) {
        throw new Error(`http.routes.templates[${i}] ${JSON.stringify(route)}: ${(e as Error).message}`, { cause: e });
      }
    });
  }

  /** The route for a request path (no query), or undefined when none is known. */
  route(path: string): string | undefined {
    if (!path.startsWith('/')) return undefined; // authority- or asterisk-form: no route
    const segs = path === '/' ? [] : path.slice(1).split('/');
    for (const t of this.templates) if (matches(t.parts, segs)) return t.route;
    if (!this.heuristic) return undefined;
    const deep = segs.length > MAX_SEGMENTS;
    const out = (deep ? segs.slice(0, MAX_SEGMENTS) : segs).map(collapseSegment);
    return `/${out.join('/')}${deep ? '/*' : ''}`;
  }
}

function matches(parts: Part[], segs: string[]): boolean {
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if ('rest' in p) return true;
    const s = segs[i];
    if (s === undefined) return false;
    if ('param' in p) {
      if (s === '') return false;
    } else if (p.literal !== s) {
      return false;
    }
  }
  return parts.length === segs.length;
}
