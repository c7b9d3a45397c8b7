-- Ask anycode for completions through Neovim's own LSP client (Neovim 0.7+),
-- headless, on the file open in the current buffer; tests/test_neovim.py runs it.
--
--   PROBE_MODE=client  start the server here with vim.lsp.start_client from
--                      ANYCODE_CMD (a JSON list) and ANYCODE_SETTINGS (a JSON
--                      object, sent as init_options and settings under `anycode`);
--                      run with `nvim --headless -u NONE FILE -c "luafile probe.lua"`.
--   PROBE_MODE=plugin  the client was started by editors/nvim's setup() from the
--                      init file: find it on the buffer and use it.
--   PROBE_LINE, PROBE_COL  the hole, 0-based (LSP position, UTF-16 units).
--   PROBE_UPDATE       (plugin mode) settings to change through update_settings() at the end.
--   PROBE_SEARCH       (plugin mode) a query for :AnycodeSearch once the workspace is indexed:
--                      the quickfix list it fills goes into the report.
--   PROBE_OUT          where the JSON report goes: the client and its attachment,
--                      the anycode/status seen, the completion items in order,
--                      the buffer after Neovim applied the first item's textEdit,
--                      the server's anycode/stats, messages shown, errors.
-- Neovim quits when done, whatever happened.
local env = os.getenv
local report = {
  nvim = vim.version and tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch
    or vim.fn.execute("version"),
  mode = env("PROBE_MODE") or "client",
  messages = {},
  statuses = {},
  items = {},
}
local TIMEOUT = tonumber(env("PROBE_TIMEOUT_MS") or "") or 45000

local function elapsed_ms(t0)
  return (vim.loop.hrtime() - t0) / 1e6
end

local function record_status(_, result)
  if type(result) == "table" then
    table.insert(report.statuses, result)
  end
end

-- messages the server shows (model errors, bad settings), wrapped around the default
local show = vim.lsp.handlers["window/showMessage"]
vim.lsp.handlers["window/showMessage"] = function(err, result, ctx, config)
  if type(result) == "table" then
    table.insert(report.messages, result.message)
  end
  return show(err, result, ctx, config)
end

local function find_or_start_client(bufnr)
  if report.mode == "plugin" then
    local anycode = require("anycode")
    local ok = vim.wait(TIMEOUT, function()
      return anycode.client(bufnr) ~= nil
    end, 20)
    if not ok then
      error("the plugin attached no client to the buffer (filetype " .. vim.bo[bufnr].filetype .. ")")
    end
    local client = anycode.client(bufnr)
    report.omnifunc = vim.bo[bufnr].omnifunc
    return client.id, function()
      return anycode.status[client.id]
    end
  end
  local cmd = vim.fn.json_decode((assert(env("ANYCODE_CMD"), "ANYCODE_CMD is not set")))
  local section = vim.fn.json_decode(env("ANYCODE_SETTINGS") or "{}")
  local last
  vim.bo[bufnr].filetype = "python"
  local id = vim.lsp.start_client({
    name = "anycode-probe",
    cmd = cmd,
    root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(bufnr), ":p:h"),
    init_options = { anycode = section },
    settings = { anycode = section },
    handlers = {
      ["anycode/status"] = function(err, result, ctx)
        last = result
        record_status(err, result, ctx)
      end,
    },
  })
  if id == nil then
    error("vim.lsp.start_client failed for " .. table.concat(cmd, " "))
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id, function()
    return last
  end
end

local function item_text(item)
  if item.textEdit then
    return item.textEdit.newText
  end
  return item.insertText or item.label
end

local function run()
  local bufnr = vim.api.nvim_get_current_buf()
  local line, col = tonumber(env("PROBE_LINE")), tonumber(env("PROBE_COL"))
  local t_start = vim.loop.hrtime()
  local id, status = find_or_start_client(bufnr)
  report.client_id = id

  -- initialized and attached
  if not vim.wait(TIMEOUT, function()
    local c = vim.lsp.get_client_by_id(id)
    return c ~= nil and c.initialized
  end, 20) then
    error("the server never initialized")
  end
  local client = vim.lsp.get_client_by_id(id)
  report.client_name = client.name
  report.root_dir = client.config.root_dir
  report.attached = vim.lsp.buf_is_attached(bufnr, id)
  report.offset_encoding = client.offset_encoding
  local caps = client.server_capabilities or {}
  report.completion_provider = caps.completionProvider ~= nil
  report.inline_completion_provider = caps.inlineCompletionProvider ~= nil -- what 0.12's ghost text needs
  report.init_ms = elapsed_ms(t_start)

  -- the model loaded (or failed): anycode/status leaves "loading"
  local st
  vim.wait(TIMEOUT, function()
    st = status()
    return st ~= nil and (st.state == "ready" or st.state == "error")
  end, 20)
  report.status = st
  report.ready_ms = elapsed_ms(t_start)

  -- completion at the hole, through the client
  vim.api.nvim_win_set_cursor(0, { line + 1, col })
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(bufnr),
    position = { line = line, character = col },
    context = { triggerKind = 1 },
  }
  local t0 = vim.loop.hrtime()
  local responses, err = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, TIMEOUT)
  report.completion_ms = elapsed_ms(t0)
  if responses == nil then
    error("textDocument/completion: " .. tostring(err))
  end
  local items = {}
  for client_id, response in pairs(responses) do
    if client_id == id then
      if response.err then
        error("textDocument/completion error: " .. vim.inspect(response.err))
      end
      local result = response.result or {}
      items = result.items or result
      report.is_incomplete = result.isIncomplete
    end
  end
  table.sort(items, function(a, b)
    return (a.sortText or a.label) < (b.sortText or b.label)
  end)
  for _, item in ipairs(items) do
    table.insert(report.items, {
      label = item.label,
      text = item_text(item),
      range = item.textEdit and item.textEdit.range or vim.NIL,
      detail = item.detail,
      sortText = item.sortText,
    })
  end

  -- the first candidate inserted by Neovim itself
  local first = items[1]
  if first then
    local edit = first.textEdit or {
      range = { start = params.position, ["end"] = params.position },
      newText = item_text(first),
    }
    vim.lsp.util.apply_text_edits({ edit }, bufnr, client.offset_encoding or "utf-16")
    report.applied = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), "\n") .. "\n"
  end

  -- what the server ended up with (settings, device, counters)
  local stats = vim.lsp.buf_request_sync(bufnr, "anycode/stats", {}, 10000)
  if stats and stats[id] and stats[id].result then
    report.stats = stats[id].result
  end

  -- plugin mode, PROBE_SEARCH: :AnycodeSearch once the index is ready, the quickfix list it fills
  local query = env("PROBE_SEARCH")
  if report.mode == "plugin" and query then
    vim.wait(TIMEOUT, function()
      local r = vim.lsp.buf_request_sync(bufnr, "anycode/stats", {}, 5000)
      local got = r and r[id] and r[id].result
      report.search_index = got and got.searchIndex
      return report.search_index ~= nil and report.search_index.state == "ready"
    end, 100)
    vim.fn.setqflist({}, "r")
    vim.cmd("AnycodeSearch " .. query)
    vim.wait(TIMEOUT, function()
      return #vim.fn.getqflist() > 0
    end, 50)
    report.quickfix = { title = vim.fn.getqflist({ title = 1 }).title, items = {} }
    for _, item in ipairs(vim.fn.getqflist()) do
      table.insert(report.quickfix.items, { file = vim.fn.bufname(item.bufnr), lnum = item.lnum, text = item.text })
    end
  end

  -- plugin mode, PROBE_UPDATE (a JSON object): change settings through the plugin
  -- (workspace/didChangeConfiguration, then the server pulls workspace/configuration)
  local update = env("PROBE_UPDATE")
  if report.mode == "plugin" and update then
    require("anycode").update_settings(vim.fn.json_decode(update))
    local want = vim.fn.json_decode(update)
    vim.wait(10000, function()
      local r = vim.lsp.buf_request_sync(bufnr, "anycode/stats", {}, 5000)
      local got = r and r[id] and r[id].result
      report.stats_after_update = got
      if not got then
        return false
      end
      for k, v in pairs(want) do
        if got.settings[k] ~= v then
          return false
        end
      end
      return true
    end, 100)
  end

  -- shut the server down cleanly before quitting
  vim.lsp.stop_client(id)
  report.stopped = vim.wait(5000, function()
    return vim.lsp.get_client_by_id(id) == nil
  end, 20)
end

local ok, err = xpcall(run, debug.traceback)
if not ok then
  report.error = tostring(err)
end
pcall(function()
  vim.fn.writefile({ vim.fn.json_encode(report) }, env("PROBE_OUT") or "probe.json")
end)
vim.cmd("qall!")
