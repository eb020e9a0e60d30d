-- Run once by the mysql:8.4 image on an empty data dir (docker-entrypoint-initdb.d), after it
-- has made the `binsync` account from MYSQL_USER and MYSQL_PASSWORD (compose.yml).
--
-- The privileges binsync needs (README, "What the source needs"): reading the binlog as a
-- replica, the replication status statements, and SELECT for the schema and snapshots.
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'binsync'@'%';

-- Something to capture: its rows are in the binlog from the start (binsync starts `earliest`).
CREATE DATABASE shop;
CREATE TABLE shop.products (
  id BIGINT UNSIGNED PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  price DECIMAL(10, 2) NOT NULL,
  tags JSON
);
INSERT INTO shop.products VALUES
  (1, 'tea', 3.50, '["drink"]'),
  (2, 'cup', 8.00, NULL);
