-- Retention prunes report history and command answers by age (fleetstate.retention): without
-- these indexes every pass would scan both tables whole.
CREATE INDEX report_history_received ON report_history(received_at);
CREATE INDEX command_history_received ON command_history(received_at);
