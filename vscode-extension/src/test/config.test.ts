import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  DEFAULTS,
  SERVER_ARGS,
  chooseInterpreter,
  formatStatus,
  parseStatus,
  searchPicks,
  toServerConfig,
} from '../config';

describe('toServerConfig', () => {
  it('returns the defaults for missing or non-object input', () => {
    for (const raw of [undefined, null, 42, 'cuda', {}]) {
      assert.deepEqual(toServerConfig(raw), DEFAULTS);
    }
  });

  it('keeps valid values', () => {
    const cfg = { model: 's2s', device: 'cuda', beamSize: 16, maxItems: 1, timeBudgetMs: 1000, modelPath: '/m/model.onnx', threads: 4, searchAllSymbols: true, searchRanking: 'bm25' };
    assert.deepEqual(toServerConfig(cfg), cfg);
    assert.equal(toServerConfig({ device: 'cpu' }).device, 'cpu');
  });

  it('drops client-only and unknown keys', () => {
    const cfg = toServerConfig({ pythonPath: '/usr/bin/python3', other: 1, device: 'cpu' });
    assert.deepEqual(Object.keys(cfg).sort(), ['beamSize', 'device', 'maxItems', 'model', 'modelPath', 'searchAllSymbols', 'searchRanking', 'threads', 'timeBudgetMs']);
    assert.equal(cfg.device, 'cpu');
  });

  it('falls back to the default for an invalid model', () => {
    for (const model of ['SLM', 'gpt', '', 1, null]) {
      assert.equal(toServerConfig({ model }).model, 'slm', String(model));
    }
    assert.equal(toServerConfig({ model: 'fim' }).model, 'fim');
  });

  it('falls back to the default for an invalid search ranking', () => {
    for (const searchRanking of ['BM25', 'encoders', '', 1, null]) {
      assert.equal(toServerConfig({ searchRanking }).searchRanking, 'auto', String(searchRanking));
    }
  });

  it('falls back to the default for an invalid device', () => {
    for (const device of ['gpu', 'CUDA', '', 1, null, ['cpu']]) {
      assert.equal(toServerConfig({ device }).device, 'auto', String(device));
    }
  });

  it('falls back to the default for non-integer or out-of-range numbers', () => {
    const bad = [0, 17, -1, 2.5, '5', NaN, Infinity, null, true];
    for (const beamSize of bad) {
      assert.equal(toServerConfig({ beamSize }).beamSize, 5, `beamSize ${String(beamSize)}`);
    }
    for (const maxItems of [0, -3, 1.5, '3', 51]) {
      assert.equal(toServerConfig({ maxItems }).maxItems, 5, `maxItems ${String(maxItems)}`);
    }
    for (const timeBudgetMs of [0, -100, 12.3, '300', 60001]) {
      assert.equal(toServerConfig({ timeBudgetMs }).timeBudgetMs, 300, `timeBudgetMs ${String(timeBudgetMs)}`);
    }
    for (const threads of [-1, 0.5, '2', 257]) {
      assert.equal(toServerConfig({ threads }).threads, 0, `threads ${String(threads)}`);
    }
  });

  it('accepts the range boundaries', () => {
    assert.equal(toServerConfig({ beamSize: 1 }).beamSize, 1);
    assert.equal(toServerConfig({ beamSize: 16 }).beamSize, 16);
    assert.equal(toServerConfig({ threads: 0 }).threads, 0);
    assert.equal(toServerConfig({ threads: 256 }).threads, 256);
  });

  it('trims modelPath and ignores non-strings', () => {
    assert.equal(toServerConfig({ modelPath: '  /a/b.onnx \n' }).modelPath, '/a/b.onnx');
    assert.equal(toServerConfig({ modelPath: 3 }).modelPath, '');
    assert.equal(toServerConfig({ modelPath: null }).modelPath, '');
  });

  it('matches the defaults and ranges declared in package.json', () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
    const props = pkg.contributes.configuration.properties;
    for (const [key, value] of Object.entries(DEFAULTS)) {
      assert.equal(props[`anycode.${key}`].default, value, key);
    }
    assert.deepEqual(props['anycode.device'].enum, ['auto', 'cpu', 'cuda']);
    for (const [key, prop] of Object.entries(props) as [string, { type: string; minimum?: number; maximum?: number }][]) {
      if (prop.type !== 'integer') {
        continue;
      }
      const name = key.slice('anycode.'.length);
      const at = (v: number) => (toServerConfig({ [name]: v }) as unknown as Record<string, number>)[name];
      assert.equal(at(prop.minimum!), prop.minimum, `${key} minimum`);
      assert.equal(at(prop.maximum!), prop.maximum, `${key} maximum`);
      assert.notEqual(at(prop.minimum! - 1), prop.minimum! - 1, `${key} below minimum`);
      assert.notEqual(at(prop.maximum! + 1), prop.maximum! + 1, `${key} above maximum`);
    }
    assert.equal(props['anycode.pythonPath'].default, '');
  });
});

describe('chooseInterpreter', () => {
  it('prefers anycode.pythonPath', () => {
    assert.equal(
      chooseInterpreter({ configured: '/opt/py/bin/python', pythonExtension: '/venv/bin/python', platform: 'linux' }),
      '/opt/py/bin/python',
    );
  });

  it('trims the configured path', () => {
    assert.equal(chooseInterpreter({ configured: '  /opt/py  ', platform: 'linux' }), '/opt/py');
  });

  it('uses the Python extension interpreter when pythonPath is empty or invalid', () => {
    for (const configured of [undefined, '', '   ', 42, null]) {
      assert.equal(
        chooseInterpreter({ configured, pythonExtension: '/venv/bin/python', platform: 'linux' }),
        '/venv/bin/python',
      );
    }
  });

  it('falls back to python3, or python on Windows', () => {
    assert.equal(chooseInterpreter({ platform: 'linux' }), 'python3');
    assert.equal(chooseInterpreter({ platform: 'darwin', pythonExtension: '' }), 'python3');
    assert.equal(chooseInterpreter({ configured: ' ', pythonExtension: ' ', platform: 'win32' }), 'python');
  });

  it('runs the anycode serve module', () => {
    assert.deepEqual(SERVER_ARGS, ['-m', 'anycode', 'serve']);
  });
});

describe('parseStatus', () => {
  it('accepts a full status', () => {
    assert.deepEqual(parseStatus({ device: 'cuda', lastLatencyMs: 12.5, state: 'ready', message: 'ok' }), {
      device: 'cuda',
      lastLatencyMs: 12.5,
      state: 'ready',
      message: 'ok',
    });
  });

  it('rejects malformed params', () => {
    for (const p of [undefined, null, 'ready', {}, { device: 'cpu' }, { device: 1, state: 'ready' }, { device: 'cpu', state: 'busy' }]) {
      assert.equal(parseStatus(p), undefined, JSON.stringify(p));
    }
  });

  it('keeps interim only when it is true', () => {
    assert.equal(parseStatus({ device: 'cpu', state: 'ready', interim: true })?.interim, true);
    assert.equal(parseStatus({ device: 'cpu', state: 'ready', interim: 'yes' })?.interim, undefined);
  });

  it('drops invalid optional fields', () => {
    assert.deepEqual(parseStatus({ device: 'cpu', state: 'ready', lastLatencyMs: 'fast', message: 7 }), {
      device: 'cpu',
      state: 'ready',
    });
    assert.deepEqual(parseStatus({ device: 'cpu', state: 'ready', lastLatencyMs: -1 }), { device: 'cpu', state: 'ready' });
  });
});

describe('formatStatus', () => {
  it('shows device and rounded latency when ready', () => {
    const view = formatStatus({ device: 'cuda', lastLatencyMs: 41.6, state: 'ready' });
    assert.equal(view.text, 'anycode: cuda 42 ms');
    assert.equal(view.warning, false);
    assert.match(view.tooltip, /last completion: 41\.6 ms/);
  });

  it('shows only the device before the first completion', () => {
    assert.equal(formatStatus({ device: 'cpu', state: 'ready' }).text, 'anycode: cpu');
    assert.equal(formatStatus({ device: 'cpu', lastLatencyMs: 0, state: 'ready' }).text, 'anycode: cpu 0 ms');
  });

  it('says the GPU is still loading while the CPU answers', () => {
    const view = formatStatus({ device: 'cpu', lastLatencyMs: 55.2, state: 'ready', interim: true,
      message: 'on the CPU while the model loads on the GPU' });
    assert.equal(view.text, 'anycode: cpu 55 ms (GPU loading)');
    assert.match(view.tooltip, /while the model loads on the GPU/);
    assert.equal(formatStatus({ device: 'cuda', state: 'ready' }).text, 'anycode: cuda');
  });

  it('shows the state while loading', () => {
    const view = formatStatus({ device: 'auto', state: 'loading' });
    assert.equal(view.text, 'anycode: auto loading');
    assert.equal(view.warning, false);
  });

  it('warns on error and puts the message in the tooltip', () => {
    const view = formatStatus({ device: 'cuda', state: 'error', message: 'CUDA out of memory' });
    assert.equal(view.text, 'anycode: cuda error');
    assert.equal(view.warning, true);
    assert.match(view.tooltip, /CUDA out of memory/);
  });

  it('omits an empty device', () => {
    assert.equal(formatStatus({ device: '', state: 'error' }).text, 'anycode: error');
  });
});

describe('searchPicks', () => {
  const range = (line: number) => ({ start: { line, character: 0 }, end: { line: line + 3, character: 0 } });

  it('keeps the server order and shows name, place and score', () => {
    const picks = searchPicks(
      [
        { uri: 'file:///w/pkg/a.py', name: 'load_settings', score: 2.5, range: range(9) },
        { uri: 'file:///w/b.py', name: 'Client.fetch', score: 1, range: range(0) },
      ],
      (uri) => uri.replace('file:///w/', ''),
    );
    assert.deepEqual(picks.map((p) => [p.label, p.description, p.detail]), [
      ['$(symbol-function) load_settings', 'pkg/a.py:10', 'score 2.50'],
      ['$(symbol-function) Client.fetch', 'b.py:1', 'score 1.00'],
    ]);
    assert.equal(picks[0].result.range.start.line, 9);
  });

  it('drops malformed answers', () => {
    assert.deepEqual(searchPicks(null, (u) => u), []);
    assert.deepEqual(searchPicks([{ uri: 1 }, { name: 'x', score: 1, uri: 'file:///a.py' }], (u) => u), []);
  });
});
