-- Two texts per failure: `last_error` / `reason` keep the operator's detail
-- (a provider's error body, bucket and constraint names), and the new
-- columns a short sentence a tenant may read (the search API returns only
-- these). Rows failed before this migration have none: the API then says
-- which stage failed, in the words of domain::stage::StageName::public_failure.
ALTER TABLE items ADD COLUMN public_error text;
ALTER TABLE record_failures ADD COLUMN public_reason text;
