-- tags.lua -- a wrk script: every request is a GET of the manifest of a random tag among
-- t0 .. t<TAGS-1> of TAGS_REPO (bench/tags.py pushes them). Environment: TAGS, TAGS_REPO.
-- The headers given with wrk -H (the Accept header) are sent with each request.
local count = tonumber(os.getenv("TAGS") or "10000")
local repo = os.getenv("TAGS_REPO") or "bench/tags"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  math.randomseed(os.time() + 7919 * (id or 0))
end

function request()
  return wrk.format("GET", "/v2/" .. repo .. "/manifests/t" .. math.random(0, count - 1))
end
