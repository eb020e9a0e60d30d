-- The table of transaction_compression.000001 (MySQL 8.0.32, binlog_transaction_compression=ON,
-- no FULL metadata). Its origin (rust_mysql_common's PR #104) does not show the statement: the
-- table map says one nullable signed INT and cannot say whether it is a key, so none is
-- declared. The name is ours; the row inserted is (1).
USE test;
CREATE TABLE tb1 (id INT);
