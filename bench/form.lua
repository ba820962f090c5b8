-- twine's upload form, shared by the scripts that upload: each call of the returned function
-- makes the request for a new version of `project`, so that every upload is stored.
local boundary = "benchboundary7d1f"
local function field(name, value)
  return "--" .. boundary .. '\r\nContent-Disposition: form-data; name="' .. name .. '"\r\n\r\n' .. value .. "\r\n"
end
function uploads(project, major)
  local auth = os.getenv("BENCH_AUTH")
  local f = assert(io.open(os.getenv("BENCH_WHEEL"), "rb"))
  local wheel = f:read("*a")
  f:close()
  -- Each thread has its own Lua state: a table's address differs between them, which makes a
  -- per-thread prefix without shared state.
  local prefix = tonumber(tostring({}):match("0x(%x+)"), 16) % 1000000007
  local counter = 0
  return function()
    counter = counter + 1
    local version = string.format("%d.%d.%d", major, prefix, counter)
    local filename = project .. "-" .. version .. "-py3-none-any.whl"
    local body = field(":action", "file_upload") .. field("protocol_version", "1")
      .. field("name", project) .. field("version", version)
      .. field("filetype", "bdist_wheel") .. field("pyversion", "py3")
      .. "--" .. boundary .. '\r\nContent-Disposition: form-data; name="content"; filename="'
      .. filename .. '"\r\nContent-Type: application/octet-stream\r\n\r\n' .. wheel .. "\r\n--"
      .. boundary .. "--\r\n"
    local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
    if auth and auth ~= "" then headers["Authorization"] = auth end
    return wrk.format("POST", "/", headers, body)
  end, prefix
end
