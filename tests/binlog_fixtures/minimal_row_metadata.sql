-- The table of minimal_row_metadata.000001 (MySQL 8.0.40, binlog_row_metadata=MINIMAL and
-- binlog_row_image=MINIMAL: the table map gives types and signedness, no names), as
-- rust_mysql_common's PR #167 (issue #162) created it to write the file. The row inserted:
-- (col_1, col_3, col_5) = (1, 'a', 3230202323).
USE noria;
CREATE TABLE t1 (
    `col_1` int NOT NULL,
    `col_2` blob,
    `col_3` char(2) DEFAULT NULL,
    `col_4` int,
    `col_5` int unsigned,
    PRIMARY KEY (`col_1`)
);
