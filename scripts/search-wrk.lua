-- The searches of benches/search_load.rs for wrk (https://github.com/wg/wrk;
-- `apt-get install wrk`), for measuring `collections serve` from outside the
-- process, as benches/README.md does:
--   bash scripts/search-load.sh --concurrency 1      # makes the database once
--   DATABASE_URL=postgres://postgres@127.0.0.1:54329/collections_search_load \
--     target/release/collections serve --user load-0 --port 8093 &
--   wrk -t2 -c10 -d20s --latency -s scripts/search-wrk.lua http://127.0.0.1:8093
local subjects = {
    "cat", "dog", "beach", "mountain", "forest", "city street", "receipt", "pasta", "bicycle", "sunset", "river",
    "bridge", "garden", "car", "train", "boat", "desk", "coffee cup", "book", "lake", "snow", "market", "church",
    "portrait",
}
local moods = { "sunny", "dark", "foggy", "colourful", "black and white", "blurry", "bright", "quiet" }
local n = 0

request = function()
    local q = moods[(n % #moods) + 1] .. " " .. subjects[((n * 5) % #subjects) + 1]
    n = n + 1
    return wrk.format("GET", "/v1/search?limit=20&q=" .. q:gsub(" ", "+"))
end
