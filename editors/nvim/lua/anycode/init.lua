-- anycode for Neovim: starts `anycode serve` for Python buffers through the
-- built-in LSP client.  Neovim 0.7 or newer; 0.8+ uses vim.lsp.start, 0.7
-- vim.lsp.start_client + vim.lsp.buf_attach_client; on 0.12+ inline (ghost
-- text) completion is switched on when vim.lsp.inline_completion exists.
--
--   require("anycode").setup({
--     cmd = { "anycode", "serve" },
--     settings = { device = "cpu", beamSize = 5, maxItems = 5, timeBudgetMs = 300,
--                  modelPath = "", threads = 0 },
--   })
--
-- :AnycodeSearch {query} lists the workspace's functions that best match a
-- description in the quickfix list (the server's anycode/search).
--
-- See docs/editors.md.
local M = {}

local defaults = {
  name = "anycode",
  cmd = { "anycode", "serve" },
  filetypes = { "python" },
  -- the `anycode` section; either flat ({ device = "cpu" }) or { anycode = { ... } }
  settings = {},
  root_markers = { "pyproject.toml", "setup.py", "setup.cfg", ".git" },
  inline_completion = true, -- Neovim 0.12+: ghost text from textDocument/inlineCompletion
  omnifunc = true,          -- set 'omnifunc' to vim.lsp.omnifunc when the buffer has none
  on_attach = nil,          -- function(client, bufnr)
  capabilities = nil,       -- client capabilities; default: Neovim's own
  handlers = nil,
}

-- the settings keys the server reads (server/settings.py)
M.keys = { "model", "device", "beamSize", "maxItems", "timeBudgetMs", "modelPath", "threads", "searchAllSymbols", "searchRanking" }

M.config = nil
M.clients = {}  -- root_dir -> client id (Neovim 0.7 only; vim.lsp.start keeps its own)
M.status = {}   -- client id -> last anycode/status notification ({state, device, lastLatencyMs, message})

local function section_of(settings)
  settings = settings or {}
  if type(settings.anycode) == "table" then
    return settings.anycode
  end
  return settings
end

local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end

local function dirname(path)
  return vim.fn.fnamemodify(path, ":h")
end

-- The closest directory above the buffer's file holding one of the markers;
-- the file's own directory when there is none (or the cwd for an unnamed buffer).
local function root_dir_for(bufnr, markers)
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == "" then
    return vim.loop.cwd()
  end
  local start = dirname(vim.fn.fnamemodify(name, ":p"))
  local dir = start
  while true do
    for _, marker in ipairs(markers) do
      if vim.loop.fs_stat(dir .. "/" .. marker) then
        return dir
      end
    end
    local parent = dirname(dir)
    if parent == dir then
      return start
    end
    dir = parent
  end
end

-- vim.lsp.get_clients on 0.10+, the older names before (deprecated there)
local function clients_named(name, bufnr)
  local out = {}
  if vim.lsp.get_clients then
    return vim.lsp.get_clients({ name = name, bufnr = bufnr })
  end
  local all = bufnr and vim.lsp.buf_get_clients(bufnr) or vim.lsp.get_active_clients()
  for _, client in pairs(all) do
    if client.name == name then
      table.insert(out, client)
    end
  end
  return out
end

local function notify(client, method, params)
  if vim.fn.has("nvim-0.11") == 1 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

local function request(client, method, params, handler, bufnr)
  if vim.fn.has("nvim-0.11") == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function on_status(_, result, ctx)
  if ctx and ctx.client_id and type(result) == "table" then
    M.status[ctx.client_id] = result
  end
end

local function enable_inline(client, bufnr)
  if not M.config.inline_completion then
    return
  end
  if vim.lsp.inline_completion then
    local caps = client.server_capabilities or {}
    if caps.inlineCompletionProvider then
      pcall(vim.lsp.inline_completion.enable, true, { bufnr = bufnr })
    end
  end
end

local function on_attach(client, bufnr)
  if M.config.omnifunc and vim.bo[bufnr].omnifunc == "" then
    vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  end
  enable_inline(client, bufnr)
  if M.config.on_attach then
    M.config.on_attach(client, bufnr)
  end
end

--- The client configuration for a buffer (what vim.lsp.start / start_client receive).
function M.client_config(bufnr)
  local cfg = assert(M.config, "anycode: call require('anycode').setup() first")
  local section = vim.deepcopy(section_of(cfg.settings))
  local handlers = vim.tbl_extend("force", { ["anycode/status"] = on_status }, cfg.handlers or {})
  return {
    name = cfg.name,
    cmd = cfg.cmd,
    root_dir = root_dir_for(bufnr, cfg.root_markers),
    -- read by the server at initialize, and again through workspace/configuration
    init_options = { anycode = section },
    settings = { anycode = section },
    capabilities = cfg.capabilities,
    handlers = handlers,
    on_attach = on_attach,
  }
end

--- Start (or reuse) the server for a buffer and attach it.  Returns the client id.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if vim.bo[bufnr].buftype ~= "" then
    return nil
  end
  local config = M.client_config(bufnr)
  if vim.lsp.start then -- Neovim 0.8+: reuses a client of the same name and root_dir
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  -- Neovim 0.7: one client per root directory, kept here
  local id = M.clients[config.root_dir]
  if id == nil or vim.lsp.get_client_by_id(id) == nil then
    local root = config.root_dir
    config.on_exit = function(_, _, client_id)
      if M.clients[root] == client_id then
        M.clients[root] = nil
      end
      M.status[client_id] = nil
    end
    id = vim.lsp.start_client(config)
    if id == nil then
      return nil
    end
    M.clients[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

--- The anycode client attached to a buffer, if any.
function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  return clients_named(M.config and M.config.name or defaults.name, bufnr)[1]
end

--- Change settings of running clients (and of clients started later).
function M.update_settings(settings)
  local cfg = assert(M.config, "anycode: call require('anycode').setup() first")
  local section = vim.tbl_extend("force", section_of(cfg.settings), section_of(settings))
  cfg.settings = section
  for _, client in ipairs(clients_named(cfg.name)) do
    local new = { anycode = vim.deepcopy(section) }
    client.config.settings = new  -- what workspace/configuration answers from on 0.7-0.9
    if client.settings ~= nil then
      client.settings = new       -- and on 0.10+
    end
    notify(client, "workspace/didChangeConfiguration", { settings = new })
  end
end

--- Quickfix items for anycode/search's answers, best first: the function's file, line and name
--- with its score.
function M.search_items(results)
  local items = {}
  for _, r in ipairs(type(results) == "table" and results or {}) do
    if type(r) == "table" and type(r.uri) == "string" and type(r.range) == "table" then
      table.insert(items, {
        filename = vim.uri_to_fname(r.uri),
        lnum = r.range.start.line + 1,
        col = 1,
        text = string.format("%s  (%.2f)", tostring(r.name), tonumber(r.score) or 0),
      })
    end
  end
  return items
end

--- Search the workspace's functions by meaning (the server's anycode/search) into the quickfix list.
function M.search(query, bufnr)
  local name = M.config and M.config.name or defaults.name
  local client = M.client(bufnr or 0) or clients_named(name)[1]
  if client == nil then
    vim.notify("anycode: no server running (open a Python file first)", vim.log.levels.WARN)
    return
  end
  if query == nil or query:match("^%s*$") then
    vim.notify("anycode: :AnycodeSearch {what the function does}", vim.log.levels.WARN)
    return
  end
  request(client, "anycode/search", { query = query, limit = 50 }, function(err, result)
    if err then
      vim.notify("anycode search: " .. tostring(err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    local items = M.search_items(result)
    vim.fn.setqflist({}, " ", { title = "anycode: " .. query, items = items })
    if #items == 0 then
      print("anycode: no function matches " .. query)
    else
      vim.cmd("copen")
    end
  end, bufnr)
end

function M.setup(opts)
  opts = opts or {}
  local cfg = vim.tbl_extend("force", vim.deepcopy(defaults), opts)
  if type(cfg.cmd) == "string" then
    cfg.cmd = vim.split(cfg.cmd, " ", { trimempty = true })
  end
  for key in pairs(section_of(cfg.settings)) do
    if not contains(M.keys, key) then
      vim.notify("anycode: unknown setting " .. tostring(key), vim.log.levels.WARN)
    end
  end
  M.config = cfg

  local group = vim.api.nvim_create_augroup("anycode", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = cfg.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
    desc = "anycode: start the completion server",
  })
  -- buffers already open when setup() runs
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and contains(cfg.filetypes, vim.bo[bufnr].filetype) then
      M.attach(bufnr)
    end
  end

  vim.api.nvim_create_user_command("AnycodeStatus", function()
    local client = M.client(0)
    if client == nil then
      print("anycode: not attached to this buffer")
      return
    end
    local st = M.status[client.id] or {}
    print(string.format("anycode: %s on %s%s%s", st.state or "starting", st.device or "?",
      st.lastLatencyMs and string.format(", last %.0f ms", st.lastLatencyMs) or "",
      st.message and (" (" .. st.message .. ")") or ""))
  end, { desc = "anycode: the server's state, device and last latency" })

  vim.api.nvim_create_user_command("AnycodeSearch", function(args)
    M.search(args.args, 0)
  end, { nargs = "+", desc = "anycode: the workspace's functions that best match a description (quickfix)" })
end

return M
