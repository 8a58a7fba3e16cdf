-- wrk's walker for the benchmark scripts (compare-nginx.sh, ab.sh): each request takes the next
-- path of the list file given after `--`, wrapping around.
local paths = {}
local i = 0
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  -- Each thread starts at its own place, so the threads do not walk the same links in step.
  i = math.floor((id or 0) * #paths / 2)
end
function request()
  i = (i % #paths) + 1
  return wrk.format("GET", paths[i])
end
