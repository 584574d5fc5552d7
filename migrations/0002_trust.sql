-- The trust boundary (contract version 3).

-- Which canonical text a seal hashed its rows with: 1 hashed confidence
-- through numeric text (6 significant digits) and SQL NULL like JSON null;
-- 2 hashes the exact bits and marks SQL NULL. Seals made before keep 1 and
-- stay verifiable.
ALTER TABLE backstop.seals ADD COLUMN canon smallint NOT NULL DEFAULT 1 CHECK (canon IN (1, 2));

-- One sealer at a time, by a row lock only the owner can take (an advisory
-- lock can be taken, and held, by any login).
CREATE TABLE backstop.seal_lock (
    one boolean PRIMARY KEY DEFAULT true CHECK (one)
);
INSERT INTO backstop.seal_lock VALUES (true);

-- No transaction has an id below 3: a row claiming one was written around
-- the contract (and would fall outside every seal's window).
ALTER TABLE backstop.action_log ADD CONSTRAINT action_log_txid_real CHECK (txid >= '3'::xid8);
