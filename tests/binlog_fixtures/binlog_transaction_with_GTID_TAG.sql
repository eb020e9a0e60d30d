-- The table of binlog_transaction_with_GTID_TAG.000001 (MySQL 9.6.0 per its format
-- description, tagged GTIDs, no FULL metadata). Its origin (rust_mysql_common's commit a67c6bf)
-- does not show the statement: the table map says INT NOT NULL, INT, DECIMAL(10,2), all
-- signed, and cannot say which key there is, so none is declared. The names are ours; the row
-- inserted is (3, 100, 250.00).
USE test;
CREATE TABLE orders (id INT NOT NULL, customer_id INT, amount DECIMAL(10,2));
