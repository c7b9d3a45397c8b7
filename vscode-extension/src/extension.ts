import * as vscode from 'vscode';
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';
import {
  DEFAULTS,
  SECTION,
  SERVER_ARGS,
  ServerConfig,
  chooseInterpreter,
  formatStatus,
  parseStatus,
  searchPicks,
  toServerConfig,
} from './config';

// The part of the ms-python.python extension API that we use.
interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string };
    resolveEnvironment?(env: { path: string }): Promise<{ executable?: { uri?: vscode.Uri } } | undefined>;
    onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
  };
}

let client: LanguageClient | undefined;
let output: vscode.OutputChannel;
let statusItem: vscode.StatusBarItem;
// Starts and stops are queued so that overlapping restarts never leave two servers running.
let queue: Promise<void> = Promise.resolve();

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('anycode');
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = 'anycode.showLog';
  context.subscriptions.push(
    output,
    statusItem,
    vscode.commands.registerCommand('anycode.restartServer', restart),
    vscode.commands.registerCommand('anycode.showLog', () => output.show(true)),
    vscode.commands.registerCommand('anycode.searchCode', searchCode),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration(`${SECTION}.pythonPath`)) {
        void restart();
      }
    }),
  );

  // Follow the Python extension's interpreter unless anycode.pythonPath pins one.
  const python = await pythonApi();
  const onEnvChange = python?.environments?.onDidChangeActiveEnvironmentPath;
  if (onEnvChange) {
    context.subscriptions.push(
      onEnvChange(() => {
        if (!vscode.workspace.getConfiguration(SECTION).get<string>('pythonPath')) {
          void restart();
        }
      }),
    );
  }

  void restart(); // don't hold up activation while the server starts
}

export async function deactivate(): Promise<void> {
  await queue;
  await stop();
}

function readSettings(): ServerConfig {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const raw = Object.fromEntries(Object.keys(DEFAULTS).map((key) => [key, cfg.get(key)]));
  return toServerConfig(raw);
}

async function start(): Promise<void> {
  const settings = readSettings();
  const command = chooseInterpreter({
    configured: vscode.workspace.getConfiguration(SECTION).get('pythonPath'),
    pythonExtension: await pythonExtensionInterpreter(),
    platform: process.platform,
  });
  output.appendLine(`Starting: ${command} ${SERVER_ARGS.join(' ')}`);
  showStatus({ device: settings.device, state: 'loading' });

  // No `transport`: stdio is the default, and TransportKind.stdio would append `--stdio` to the args.
  const serverOptions: ServerOptions = { command, args: [...SERVER_ARGS] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'python' },
      { scheme: 'untitled', language: 'python' },
    ],
    initializationOptions: settings,
    synchronize: { configurationSection: SECTION },
    outputChannel: output,
    middleware: {
      workspace: {
        // Hand the server validated settings, without client-only keys.
        configuration: async (params, token, next) => {
          const result = await next(params, token);
          if (!Array.isArray(result)) {
            return result;
          }
          return result.map((value, i) => (params.items[i]?.section === SECTION ? toServerConfig(value) : value));
        },
      },
    },
  };

  const c = new LanguageClient('anycode', 'anycode', serverOptions, clientOptions);
  c.registerProposedFeatures();
  let serverReported = false;
  c.onNotification('anycode/status', (params: unknown) => {
    const status = parseStatus(params);
    if (status && client === c) {
      serverReported = true;
      showStatus(status);
    }
  });
  c.onDidChangeState(({ newState }) => {
    if (client !== c) {
      return; // stopped on purpose by restart/deactivate
    }
    if (newState === State.Starting) {
      serverReported = false;
    } else if (newState === State.Running && !serverReported) {
      showStatus({ device: settings.device, state: 'ready' });
    } else if (newState === State.Stopped) {
      showStatus({ device: settings.device, state: 'error', message: 'The server stopped; see the log.' });
    }
  });
  client = c;
  try {
    await c.start();
  } catch (err) {
    const message = `Could not start the anycode server with ${command}: ${err instanceof Error ? err.message : String(err)}`;
    output.appendLine(message);
    // The client has already shown an error message with a link to the log.
    showStatus({ device: settings.device, state: 'error', message });
  }
}

async function stop(): Promise<void> {
  const c = client;
  client = undefined;
  if (c) {
    try {
      await c.dispose(2000);
    } catch (err) {
      output.appendLine(`Error while stopping the server: ${String(err)}`);
    }
  }
}

function restart(): Promise<void> {
  queue = queue
    .then(stop)
    .then(start)
    .catch((err) => output.appendLine(`Restart failed: ${String(err)}`));
  return queue;
}

/** "anycode: Search code by meaning": a query, the server's best functions in a quick pick, the chosen one opened. */
async function searchCode(): Promise<void> {
  const c = client;
  if (!c || !c.isRunning()) {
    void vscode.window.showWarningMessage('anycode: the server is not running.');
    return;
  }
  const query = await vscode.window.showInputBox({
    title: 'anycode: Search code by meaning',
    prompt: 'Describe the function you are looking for',
    placeHolder: 'parse a config file',
  });
  if (!query?.trim()) {
    return;
  }
  let results: unknown;
  try {
    results = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: 'anycode: searching' },
      () => c.sendRequest('anycode/search', { query, limit: 50 }),
    );
  } catch (err) {
    void vscode.window.showErrorMessage(`anycode search failed: ${err instanceof Error ? err.message : String(err)}`);
    return;
  }
  const picks = searchPicks(results, (uri) => vscode.workspace.asRelativePath(vscode.Uri.parse(uri)));
  if (picks.length === 0) {
    void vscode.window.showInformationMessage(`anycode: no function matches "${query}".`);
    return;
  }
  const chosen = await vscode.window.showQuickPick(picks, { title: `anycode: ${query}`, matchOnDescription: true });
  if (!chosen) {
    return;
  }
  const { start } = chosen.result.range;
  const position = new vscode.Position(start.line, start.character);
  await vscode.window.showTextDocument(vscode.Uri.parse(chosen.result.uri), {
    selection: new vscode.Range(position, position),
  });
}

function showStatus(status: Parameters<typeof formatStatus>[0]): void {
  const view = formatStatus(status);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor = view.warning ? new vscode.ThemeColor('statusBarItem.warningBackground') : undefined;
  statusItem.show();
}

async function pythonApi(): Promise<PythonExtensionApi | undefined> {
  try {
    const ext = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
    if (!ext) {
      return undefined;
    }
    return ext.isActive ? ext.exports : await ext.activate();
  } catch {
    return undefined;
  }
}

/** The Python extension's selected interpreter, or undefined; never throws. */
async function pythonExtensionInterpreter(): Promise<string | undefined> {
  try {
    const envs = (await pythonApi())?.environments;
    if (!envs) {
      return undefined;
    }
    const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
    const active = envs.getActiveEnvironmentPath(resource);
    // `path` may be an environment folder; prefer the resolved executable.
    const resolved = await envs.resolveEnvironment?.(active);
    return resolved?.executable?.uri?.fsPath ?? active?.path;
  } catch (err) {
    output.appendLine(`Could not read the Python extension's interpreter: ${String(err)}`);
    return undefined;
  }
}
