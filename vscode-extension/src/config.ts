// Pure logic of the extension: no `vscode` import, so it runs under `node --test`.

export const SECTION = 'anycode';
export const SERVER_ARGS: readonly string[] = ['-m', 'anycode', 'serve'];

export type Device = 'auto' | 'cpu' | 'cuda';
export const DEVICES: readonly Device[] = ['auto', 'cpu', 'cuda'];

/** The SLM, or a baseline of issue 21 exported to `modelPath` (docs/baselines.md, "Serving"). */
export type Model = 'slm' | 's2s' | 'fim';
export const MODELS: readonly Model[] = ['slm', 's2s', 'fim'];

export type SearchRanking = 'auto' | 'bm25';
export const SEARCH_RANKINGS: readonly SearchRanking[] = ['auto', 'bm25'];

/** What the server receives: initializationOptions and the `anycode` configuration section. */
export interface ServerConfig {
  model: Model;
  device: Device;
  beamSize: number;
  maxItems: number;
  timeBudgetMs: number;
  modelPath: string;
  threads: number;
  searchAllSymbols: boolean;
  searchRanking: SearchRanking;
}

export const DEFAULTS: Readonly<ServerConfig> = Object.freeze({
  model: 'slm',
  device: 'auto',
  beamSize: 5,
  maxItems: 5,
  timeBudgetMs: 300,
  modelPath: '',
  threads: 0,
  searchAllSymbols: false,
  searchRanking: 'auto',
});

// Integer settings and their allowed ranges (kept in sync with package.json).
const INT_RANGES = {
  beamSize: [1, 16],
  maxItems: [1, 50],
  timeBudgetMs: [1, 60000],
  threads: [0, 256],
} as const;

function intIn(value: unknown, [min, max]: readonly [number, number], fallback: number): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
    ? value
    : fallback;
}

/**
 * Validate raw settings (e.g. `workspace.getConfiguration('anycode')` or its plain-object form)
 * into a server config: unknown keys such as `pythonPath` are dropped and invalid values fall
 * back to their defaults.
 */
export function toServerConfig(raw: unknown): ServerConfig {
  const s = (raw !== null && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  return {
    model: MODELS.includes(s.model as Model) ? (s.model as Model) : DEFAULTS.model,
    device: DEVICES.includes(s.device as Device) ? (s.device as Device) : DEFAULTS.device,
    beamSize: intIn(s.beamSize, INT_RANGES.beamSize, DEFAULTS.beamSize),
    maxItems: intIn(s.maxItems, INT_RANGES.maxItems, DEFAULTS.maxItems),
    timeBudgetMs: intIn(s.timeBudgetMs, INT_RANGES.timeBudgetMs, DEFAULTS.timeBudgetMs),
    modelPath: typeof s.modelPath === 'string' ? s.modelPath.trim() : DEFAULTS.modelPath,
    threads: intIn(s.threads, INT_RANGES.threads, DEFAULTS.threads),
    searchAllSymbols: typeof s.searchAllSymbols === 'boolean' ? s.searchAllSymbols : DEFAULTS.searchAllSymbols,
    searchRanking: SEARCH_RANKINGS.includes(s.searchRanking as SearchRanking)
      ? (s.searchRanking as SearchRanking)
      : DEFAULTS.searchRanking,
  };
}

export interface InterpreterInputs {
  /** The `anycode.pythonPath` setting. */
  configured?: unknown;
  /** The Python extension's active interpreter, if it could be read. */
  pythonExtension?: string;
  platform: string;
}

/** `anycode.pythonPath`, else the Python extension's interpreter, else python3 (python on Windows). */
export function chooseInterpreter({ configured, pythonExtension, platform }: InterpreterInputs): string {
  if (typeof configured === 'string' && configured.trim()) {
    return configured.trim();
  }
  if (pythonExtension?.trim()) {
    return pythonExtension.trim();
  }
  return platform === 'win32' ? 'python' : 'python3';
}

export type ServerState = 'loading' | 'ready' | 'error';

/** Params of the server's `anycode/status` notification. */
export interface Status {
  device: string;
  lastLatencyMs?: number;
  state: ServerState;
  message?: string;
  /** Ready on the CPU while the model still loads on the GPU. */
  interim?: boolean;
}

/** Accept a notification payload only if it has the documented shape; otherwise undefined. */
export function parseStatus(params: unknown): Status | undefined {
  if (params === null || typeof params !== 'object') {
    return undefined;
  }
  const p = params as Record<string, unknown>;
  if (typeof p.device !== 'string' || !['loading', 'ready', 'error'].includes(p.state as string)) {
    return undefined;
  }
  const status: Status = { device: p.device, state: p.state as ServerState };
  if (typeof p.lastLatencyMs === 'number' && Number.isFinite(p.lastLatencyMs) && p.lastLatencyMs >= 0) {
    status.lastLatencyMs = p.lastLatencyMs;
  }
  if (typeof p.message === 'string' && p.message) {
    status.message = p.message;
  }
  if (p.interim === true) {
    status.interim = true;
  }
  return status;
}

export interface StatusView {
  text: string;
  tooltip: string;
  warning: boolean;
}

/** Status bar text: "anycode: <device> <last latency> ms", with the state when not ready. */
export function formatStatus(status: Status): StatusView {
  const parts = ['anycode:'];
  if (status.device) {
    parts.push(status.device);
  }
  if (status.state === 'ready') {
    if (status.lastLatencyMs !== undefined) {
      parts.push(`${Math.round(status.lastLatencyMs)} ms`);
    }
    if (status.interim) {
      parts.push('(GPU loading)');
    }
  } else {
    parts.push(status.state);
  }
  const tooltip = [`anycode server: ${status.state}`];
  if (status.device) {
    tooltip.push(`device: ${status.device}`);
  }
  if (status.lastLatencyMs !== undefined) {
    tooltip.push(`last completion: ${status.lastLatencyMs.toFixed(1)} ms`);
  }
  if (status.message) {
    tooltip.push(status.message);
  }
  return { text: parts.join(' '), tooltip: tooltip.join('\n'), warning: status.state === 'error' };
}

/** One answer of the server's `anycode/search` request. */
export interface SearchResult {
  uri: string;
  name: string;
  score: number;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
}

export interface SearchPick {
  label: string;
  description: string;
  detail: string;
  result: SearchResult;
}

/**
 * Quick pick items for `anycode/search` results, in the server's order (best first): the function's
 * name, its file relative to the workspace (`relative` maps a URI to that) and line, and the score.
 * Malformed entries are dropped.
 */
export function searchPicks(results: unknown, relative: (uri: string) => string): SearchPick[] {
  if (!Array.isArray(results)) {
    return [];
  }
  return results
    .filter((r): r is SearchResult =>
      r !== null && typeof r === 'object' && typeof r.uri === 'string' && typeof r.name === 'string' &&
      typeof r.score === 'number' && typeof r.range?.start?.line === 'number')
    .map((r) => ({
      label: `$(symbol-function) ${r.name}`,
      description: `${relative(r.uri)}:${r.range.start.line + 1}`,
      detail: `score ${r.score.toFixed(2)}`,
      result: r,
    }));
}
