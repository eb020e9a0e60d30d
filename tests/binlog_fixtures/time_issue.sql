-- The table of time_issue.000001 (MySQL 8.0.40, no FULL metadata), as rust_mysql_common's
-- issue #169 created it to write the file: INSERT INTO t VALUES ('-507:48:27').
USE noria;
CREATE TABLE t (c TIME);
