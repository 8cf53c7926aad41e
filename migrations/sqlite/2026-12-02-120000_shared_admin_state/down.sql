DROP TABLE import_reports;
DROP TABLE login_failures;
