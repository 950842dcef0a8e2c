-- Fuzzing the argument parsers: thousands of random stream names, patterns,
-- payloads, metadata objects and jsonb batches.  Every call must either
-- succeed or fail with 22023/54000 (never another error, never a crash),
-- and a failed call must write nothing.  setseed() keeps it repeatable.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS ledger CASCADE;
RESET client_min_messages;
CREATE EXTENSION ledger;
SET ledger.max_payload_bytes = 2000;
SELECT setseed(0.4242);

-- A random string from a nasty alphabet: controls, quotes, backslashes,
-- stars, multibyte and C1 characters, of length 0..300.
CREATE FUNCTION pg_temp.rnd_text(maxlen int) RETURNS text LANGUAGE sql VOLATILE AS $$
	SELECT string_agg(substr(E'ab/-_.:*"\\\t\n\u0001\u007f\u0085 éü€😀' || chr(8232), (random() * 21)::int + 1, 1), '')
	FROM generate_series(1, (random() * random() * maxlen)::int)
$$;
-- A random JSON value, sometimes nested, sometimes huge.
CREATE FUNCTION pg_temp.rnd_json(depth int) RETURNS jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE r float := random();
BEGIN
	IF depth <= 0 OR r < 0.3 THEN
		RETURN CASE (random() * 5)::int
			WHEN 0 THEN to_jsonb(pg_temp.rnd_text(20))
			WHEN 1 THEN to_jsonb((random() * 1000)::int)
			WHEN 2 THEN 'null'::jsonb
			WHEN 3 THEN to_jsonb(random() < 0.5)
			WHEN 4 THEN to_jsonb(repeat('x', (random() * 3000)::int))
			ELSE '{}'::jsonb END;
	ELSIF r < 0.65 THEN
		RETURN jsonb_build_object(pg_temp.rnd_text(8), pg_temp.rnd_json(depth - 1),
								  pg_temp.rnd_text(8), pg_temp.rnd_json(depth - 1));
	ELSE
		RETURN jsonb_build_array(pg_temp.rnd_json(depth - 1), pg_temp.rnd_json(depth - 1));
	END IF;
END $$;

CREATE TEMP TABLE outcome (fn text, state text);
DO $$
DECLARE
	i int;
	name text;
	ok_appends bigint := 0;
	before bigint;
	st text;
BEGIN
	FOR i IN 1..1500 LOOP
		name := pg_temp.rnd_text(300);
		SELECT count(*) INTO before FROM ledger.entries;
		BEGIN
			PERFORM ledger.append(name, pg_temp.rnd_json(3),
								  order_key => pg_temp.rnd_text(10),
								  dedup_key => CASE WHEN random() < 0.3 THEN pg_temp.rnd_text(3) ELSE '' END,
								  metadata => CASE WHEN random() < 0.5 THEN pg_temp.rnd_json(1) ELSE '{}' END);
			INSERT INTO outcome VALUES ('append', 'ok');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
			INSERT INTO outcome VALUES ('append', st);
			IF (SELECT count(*) FROM ledger.entries) <> before THEN
				RAISE EXCEPTION 'failed append wrote something';
			END IF;
		END;

		BEGIN
			PERFORM * FROM ledger.read_all(streams => pg_temp.rnd_text(20), "limit" => 1);
			INSERT INTO outcome VALUES ('read_all pattern', 'ok');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
			INSERT INTO outcome VALUES ('read_all pattern', st);
		END;

		SELECT count(*) INTO before FROM ledger.entries;
		BEGIN
			PERFORM * FROM ledger.append_batch('fuzz-batch', CASE WHEN random() < 0.7
				THEN (SELECT jsonb_agg(CASE (random() * 4)::int
							WHEN 0 THEN jsonb_build_object('payload', pg_temp.rnd_json(2))
							WHEN 1 THEN jsonb_build_object('payload', pg_temp.rnd_json(1), 'tags', pg_temp.rnd_json(1))
							WHEN 2 THEN jsonb_build_object('payload', 1, 'dedup_key', pg_temp.rnd_json(0))
							WHEN 3 THEN jsonb_build_object(pg_temp.rnd_text(8), 1)
							ELSE pg_temp.rnd_json(1) END)
					  FROM generate_series(0, (random() * 4)::int))
				ELSE pg_temp.rnd_json(2) END);
			INSERT INTO outcome VALUES ('append_batch jsonb', 'ok');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
			INSERT INTO outcome VALUES ('append_batch jsonb', st);
			IF (SELECT count(*) FROM ledger.entries) <> before THEN
				RAISE EXCEPTION 'failed batch wrote something';
			END IF;
		END;

		BEGIN
			PERFORM ledger.set_retention(pg_temp.rnd_text(12), max_entries => 1000000);
			INSERT INTO outcome VALUES ('pattern', 'ok');
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
			INSERT INTO outcome VALUES ('pattern', st);
		END;
	END LOOP;
END $$;

-- only success, 22023 and 54000 may appear
SELECT fn, state NOT IN ('ok', '22023', '54000') AS unexpected, count(*) > 0 AS seen
  FROM outcome GROUP BY 1, 2 ORDER BY 1, 2;
SELECT fn, state, count(*) FROM outcome WHERE state NOT IN ('ok', '22023', '54000') GROUP BY 1, 2;
-- both outcomes happened for every parser
SELECT fn, bool_or(state = 'ok') AS some_ok, bool_or(state <> 'ok') AS some_rejected
  FROM outcome GROUP BY fn ORDER BY fn;
-- every stored stream name is valid
SELECT count(*) AS bad_names FROM ledger.streams
 WHERE name = '' OR octet_length(name) > 255 OR name ~ '[\x01-\x1f\x7f\u0080-\u009f]';
-- counts agree with the rows
SELECT count(*) AS streams_with_wrong_count FROM ledger.streams s
 WHERE s.last_seq - s.trimmed_seq <> (SELECT count(*) FROM ledger.entries e WHERE e.stream_id = s.stream_id);
RESET ledger.max_payload_bytes;
