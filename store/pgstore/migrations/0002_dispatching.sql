-- A dispatcher raises dispatching before it publishes a parallel batch's
-- work and dispatched after, so positions between the two may or may not
-- be published. Batches stored before this column existed published
-- everything below dispatched.
ALTER TABLE batches ADD COLUMN dispatching integer;
UPDATE batches SET dispatching = dispatched;
ALTER TABLE batches ALTER COLUMN dispatching SET NOT NULL;
ALTER TABLE batches ADD CONSTRAINT batches_dispatching_check CHECK (dispatching >= dispatched);

-- Dispatchers look for running parallel batches with work left to publish,
-- and for any whose last publish may have been cut off.
DROP INDEX batches_undispatched_idx;
CREATE INDEX batches_dispatch_work_idx ON batches (id)
    WHERE type = 'parallel'
      AND ((status = 'running' AND dispatching < total) OR dispatched < dispatching);
