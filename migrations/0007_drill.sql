-- Drills: the tabletop exercise's score, kept in the log so runs compare.

CREATE FUNCTION backstop.record_drill(report jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    PERFORM backstop._check_json('record_drill', 'report', report, 65536, true);
    IF jsonb_typeof(report -> 'drill_id') IS DISTINCT FROM 'string' THEN
        PERFORM backstop._bad('record_drill', 'report.drill_id is required');
    END IF;
    SELECT l.seq INTO v_seq FROM backstop._append('drill', backstop.actor(), report ->> 'agent', NULL, NULL, report) l;
    RETURN v_seq;
END
$$;
