-- The tables of update-full-row.binlog, update-partial-row.binlog, write-full-row.binlog and
-- write-partial-row.binlog (MySQL 5.1.37-ndb-6.2.19, no row metadata: the table maps give
-- column types only). The files come from MySQL's NDB tests
-- (mysql-test/suite/ndb_binlog/t/ndb_binlog_variants.test), which create `ba` as below and
-- write the rows these files hold: INSERT (1,1,1)..(4,4,4), UPDATE lp=40 WHERE ks=4, DELETE
-- WHERE ks=2. ndb_apply_status is the NDB binlog's own table, as the server creates it
-- (sql/ha_ndbcluster_binlog.cc), with `VARCHAR(255) BINARY` written the way SHOW CREATE TABLE
-- prints it (binsync's DDL reader does not read the BINARY attribute).
USE test;
CREATE TABLE ba (ks INT PRIMARY KEY, st INT, lp INT) ENGINE = NDB;
CREATE TABLE mysql.ndb_apply_status (
  server_id INT UNSIGNED NOT NULL,
  epoch BIGINT UNSIGNED NOT NULL,
  log_name VARCHAR(255) CHARACTER SET latin1 COLLATE latin1_bin NOT NULL,
  start_pos BIGINT UNSIGNED NOT NULL,
  end_pos BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY USING HASH (server_id)
) ENGINE=NDB DEFAULT CHARSET=latin1;
